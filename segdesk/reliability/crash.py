"""Crash stress: kill a working segdesk with SIGKILL at random moments and check nothing was lost.

    python -m segdesk.reliability.crash --kills 100 --out crash.json

The parent makes a project of generated images, then, ``--kills`` times, starts a child process
that works on it through the real code paths (ProjectLock, Project.open/clean_up, LabelDocument
brush strokes, Project.save_label, Project.accept, Trainer steps, validations and checkpoints) and
kills it with SIGKILL after a random delay. The child reports what it did in an fsynced journal:
an *intent* line before each label write or checkpoint, a *done* line after the call returned.

After every kill the parent checks, like a user restarting segdesk would see it:

- the lock left by the dead child is detected as stale and taken over;
- Project.open succeeds and removes every crash temporary; the image list is complete;
- every label write that returned before the kill is on disk pixel for pixel (or the write that
  was in flight, whole: never a mix), and every accept that returned left its image accepted;
- every PNG, JSON and safetensors file in the project parses; log.jsonl lines parse;
- every checkpoint whose save returned loads (weights match their checksum) and builds the model;
  every checkpoint with metadata is complete; the current one (or the newest that loads) loads.

Exit status 1 when any check failed; the JSON report lists kills, what the child was doing when
killed, and each failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from segdesk.core import encoding, storage
from segdesk.core.project import STATUS_ACCEPTED, Project
from segdesk.core.project_lock import ProjectLock

log = logging.getLogger(__name__)

N_IMAGES = 16
IMAGE_SIZE = (72, 96)
CLASSES = ["disc", "bar"]
READY_TIMEOUT_S = 120.0


# ----- helpers shared by parent and child


def label_hash(label: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(label).tobytes() + str(label.shape).encode()).hexdigest()[:16]


class Journal:
    """Append-only JSON lines, each fsynced before the call returns (the child's testimony)."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, **record) -> None:
        os.write(self.fd, (json.dumps(record) + "\n").encode())
        os.fsync(self.fd)


def read_journal(path: Path) -> list[dict]:
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line torn by the kill: the child had not finished saying it
    return out


def make_images(folder: Path, n: int = N_IMAGES, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = IMAGE_SIZE
    for i in range(n):
        img = rng.normal(50, 12, (h, w)).clip(0, 255).astype(np.uint8)
        cy, cx = int(rng.integers(15, h - 15)), int(rng.integers(15, w - 15))
        cv2.circle(img, (cx, cy), int(rng.integers(6, 12)), 210, -1)
        y0 = int(rng.integers(0, h - 10))
        img[y0:y0 + 6, 5:40] = 130
        cv2.imwrite(str(folder / f"case{i:03d}.png"), img)


# ----- the child: works until killed


def child(root: Path, journal_path: Path, seed: int) -> None:
    import torch

    from segdesk.core.label_document import LabelDocument
    from segdesk.ml.config import TrainConfig
    from segdesk.ml.train import Trainer

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)
    rng = random.Random(seed)
    journal = Journal(journal_path)
    lock = ProjectLock.acquire(root, owner="segdesk crash-test child")  # as the window does
    project = Project.open(root, clean=False)
    project.clean_up()
    config = TrainConfig(crop_size=48, batch_size=2, base_width=4, depth=2, val_every=3, patience=10**6,
                         lr=3e-3, seed=seed)
    trainer = Trainer(root, config, device="cpu")
    real_save = trainer.store.save

    def journalled_save(state_dict, meta, **options):  # options: the store's (onnx_model)
        journal.write(kind="checkpoint-intent", pid=os.getpid())
        checkpoint_id = real_save(state_dict, meta, **options)
        journal.write(kind="checkpoint-done", id=checkpoint_id, pid=os.getpid())
        return checkpoint_id

    trainer.store.save = journalled_save
    journal.write(kind="ready", pid=os.getpid(), took_over=lock.took_over)

    def document(image_id: str) -> LabelDocument:
        label = project.read_label(image_id)
        return LabelDocument(label if label is not None else np.zeros(project.image(image_id).shape, np.uint8))

    def paint(doc: LabelDocument) -> None:
        h, w = doc.shape
        for _ in range(rng.randint(1, 4)):
            doc.begin_stroke(rng.choice([0, 1, 2, 3]), rng.uniform(2, 9))
            for _ in range(rng.randint(1, 6)):
                doc.stroke_to(rng.uniform(0, w), rng.uniform(0, h))
            doc.end_stroke()

    parent = os.getppid()
    while os.getppid() == parent:  # never outlive the parent (an interrupted run)
        action = rng.choices(("paint", "accept", "train", "checkpoint"), (5, 4, 2, 1))[0]
        if action in ("paint", "accept"):
            # mostly images not accepted yet; sometimes an accepted one (erasing reopens it)
            open_ids = [e.id for e in project.images if e.status != STATUS_ACCEPTED]
            ids = open_ids if open_ids and rng.random() < 0.8 else [e.id for e in project.images]
            image_id = rng.choice(ids)
            doc = document(image_id)
            paint(doc)
            if action == "paint":
                journal.write(kind="write-intent", op="save_label", image=image_id, hash=label_hash(doc.label))
                project.save_label(image_id, doc.label)
                journal.write(kind="write-done", op="save_label", image=image_id, hash=label_hash(doc.label))
            else:
                expected = encoding.merge_accept(doc.label)
                journal.write(kind="write-intent", op="accept", image=image_id, hash=label_hash(expected))
                accepted = project.accept(image_id, doc.label, seconds_spent=rng.uniform(1, 60))
                journal.write(kind="write-done", op="accept", image=image_id, hash=label_hash(accepted))
        elif action == "train":
            trainer.refresh_labels()
            if trainer.has_data:
                journal.write(kind="train", steps=config.val_every)
                trainer.run(max_steps=config.val_every)
        elif trainer.has_data:
            journal.write(kind="checkpoint")
            trainer.save_checkpoint(None, None)


# ----- the parent: kill, then check


class Checker:
    def __init__(self, root: Path, journal_path: Path):
        self.root = root
        self.journal_path = journal_path
        self.checkpoints_done: set[str] = set()
        self._parsed: dict[Path, tuple[int, int]] = {}  # files that parsed, by (size, mtime): not again
        self._loaded: set[str] = set()  # checkpoints verified once (they are immutable)

    def check(self) -> tuple[list[str], dict]:
        """Problems found (empty: all good) and figures about the state after this kill."""
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        from segdesk.ml.checkpoints import POINTER, CheckpointStore, check_compatible
        from segdesk.ml.inference import Predictor

        problems: list[str] = []
        facts: dict = {}
        try:
            lock = ProjectLock.acquire(self.root, owner="crash-test checker", heartbeat=False)
        except Exception as exc:  # noqa: BLE001 - reported
            return [f"the dead child's lock was not taken over: {exc}"], facts
        try:
            facts["stale_lock_taken_over"] = lock.took_over is not None
            facts["temporaries_left"] = len(list(self.root.rglob(storage.TMP_PREFIX + "*")))
            try:
                project = Project.open(self.root)  # cleans temporaries, as the app does
            except Exception as exc:  # noqa: BLE001
                return [f"project does not open: {type(exc).__name__}: {exc}"], facts
            leftovers = list(self.root.rglob(storage.TMP_PREFIX + "*"))
            if leftovers:
                problems.append(f"temporaries not cleaned: {[p.name for p in leftovers]}")
            if len(project.images) != N_IMAGES:
                problems.append(f"project lists {len(project.images)} images, not {N_IMAGES}")

            # labels: the last write that returned, or the one in flight, whole
            entries = read_journal(self.journal_path)
            last_done: dict[str, dict] = {}
            pending: dict[str, dict] = {}
            for e in entries:
                if e["kind"] == "write-intent":
                    pending[e["image"]] = e
                elif e["kind"] == "write-done":
                    last_done[e["image"]] = e
                    pending.pop(e["image"], None)
                elif e["kind"] == "checkpoint-done":
                    self.checkpoints_done.add(e["id"])
            verified = 0
            for image_id in set(last_done) | set(pending):
                allowed = {x["hash"] for x in (last_done.get(image_id), pending.get(image_id)) if x}
                try:
                    label = project.read_label(image_id)
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"label of {image_id} unreadable: {exc}")
                    continue
                got = label_hash(label) if label is not None else None
                if got not in allowed:
                    problems.append(f"label of {image_id} is {got}, expected one of {sorted(allowed)}")
                    continue
                done = last_done.get(image_id)
                if (done and done["op"] == "accept" and image_id not in pending
                        and project.image(image_id).status != STATUS_ACCEPTED):
                    problems.append(f"{image_id} was accepted but project.json says {project.image(image_id).status}")
                verified += 1
            facts["labels_verified"] = verified
            facts["accepted"] = len(project.accepted_ids())

            # every file parses
            for path in sorted(self.root.rglob("*")):
                if not path.is_file():
                    continue
                stat = path.stat()
                if self._parsed.get(path) == (stat.st_size, stat.st_mtime_ns):
                    continue
                self._parsed[path] = (stat.st_size, stat.st_mtime_ns)
                try:
                    if path.suffix == ".png":
                        if cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED) is None:
                            problems.append(f"{path.relative_to(self.root)} is not a readable PNG")
                    elif path.suffix == ".json":
                        json.loads(path.read_text())
                    elif path.suffix == ".safetensors":
                        load_safetensors(path.read_bytes())
                    elif path.suffix == ".jsonl":
                        lines = path.read_text().splitlines()
                        for i, line in enumerate(lines):
                            json.loads(line)
                except (ValueError, SafetensorError, OSError) as exc:
                    self._parsed.pop(path, None)
                    problems.append(f"{path.relative_to(self.root)} does not parse: {exc}")

            # checkpoints: every finished save loads; metadata marks complete ones; current loads
            store = CheckpointStore(self.root / "models")
            listed = {m["id"] for m in store.list()}
            for meta_path in (self.root / "models").glob("[0-9]*.json"):
                if meta_path.stem not in listed:
                    problems.append(f"checkpoint metadata {meta_path.name} without its weights")
            for checkpoint_id in sorted((listed | self.checkpoints_done) - self._loaded):
                try:
                    store.load(checkpoint_id)
                    self._loaded.add(checkpoint_id)
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"checkpoint {checkpoint_id} does not load: {exc}")
            for checkpoint_id in self._loaded - listed:
                problems.append(f"checkpoint {checkpoint_id} loaded before and is gone now")
            facts["checkpoints"] = len(listed)
            if listed:
                if not (self.root / "models" / POINTER).exists():
                    problems.append("checkpoints exist but there is no current.json")
                try:
                    predictor = Predictor.from_checkpoint(self.root / "models", device="cpu")
                    check_compatible(predictor.meta, project.n_classes)
                    facts["current_checkpoint"] = predictor.checkpoint
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"the newest loadable checkpoint does not load: {exc}")
        finally:
            lock.release()
        return problems, facts


def _moment(entry: dict | None) -> str:
    """What the child was doing when killed, from its last journal line."""
    if entry is None:
        return "idle after start-up"
    kind = entry["kind"]
    name = entry.get("op") or kind.split("-")[0]
    if kind.endswith("-intent"):
        return f"{name} in flight"
    if kind.endswith("-done"):
        return f"just after {name}"
    return {"train": "training steps", "checkpoint": "checkpoint save"}.get(kind, kind)


def _wait_ready(journal_path: Path, since: int, child_proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child_proc.poll() is not None:
            return False
        entries = read_journal(journal_path)[since:]
        if any(e["kind"] == "ready" and e.get("pid") == child_proc.pid for e in entries):
            return True
        time.sleep(0.05)
    return False


def run(kills: int, work: Path, out: Path | None = None, seed: int = 0, max_delay: float = 6.0,
        early_kill: float = 0.1, progress=None) -> dict:
    """Run ``kills`` kill-and-check rounds in ``work`` (created); returns the report."""
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    make_images(work / "images")
    root = work / "project"
    project = Project.create(root, CLASSES)
    project.add_images([work / "images"])
    journal_path = work / "journal.jsonl"
    checker = Checker(root, journal_path)
    killed_during: Counter = Counter()
    failures: list[dict] = []
    rounds: list[dict] = []
    started = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QT_QPA_PLATFORM": "offscreen"}
    child_errors = 0
    for k in range(kills):
        since = len(read_journal(journal_path))
        proc = subprocess.Popen(
            [sys.executable, "-m", "segdesk.reliability.crash", "--child", "--project", str(root),
             "--journal", str(journal_path), "--seed", str(seed * 100_000 + k)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        early = rng.random() < early_kill
        if early:  # during start-up: lock, open, clean-up, loading the checkpoint
            time.sleep(rng.uniform(0.0, 2.5))
        elif not _wait_ready(journal_path, since, proc, READY_TIMEOUT_S):
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.poll() is not None else "no ready"
            failures.append({"kill": k, "problems": [f"child did not start: {err}"]})
            child_errors += 1
        else:
            time.sleep(rng.uniform(0.05, max_delay))
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        if not alive:
            child_errors += 1
            failures.append({"kill": k, "problems": [f"child ended by itself ({proc.returncode}): {stderr[-2000:]}"]})
        mine = read_journal(journal_path)[since:]
        last = next((e for e in reversed(mine) if e["kind"] != "ready"), None)
        moment = "start-up" if not any(e["kind"] == "ready" for e in mine) else _moment(last)
        killed_during[moment] += 1
        problems, facts = checker.check()
        rounds.append({"kill": k, "moment": moment, **facts, "problems": len(problems)})
        if problems:
            failures.append({"kill": k, "moment": moment, "problems": problems[:20]})
        if progress is not None:
            progress(k, moment, problems, facts)
    report = {
        "kills": kills,
        "kills_survived": kills - len({f["kill"] for f in failures}),
        "failures": failures,
        "child_errors": child_errors,
        "killed_during": dict(killed_during.most_common()),
        "labels_verified_last": rounds[-1].get("labels_verified") if rounds else 0,
        "accepted_last": rounds[-1].get("accepted") if rounds else 0,
        "checkpoints_last": rounds[-1].get("checkpoints") if rounds else 0,
        "checkpoints_finished_and_verified": len(checker.checkpoints_done),
        "writes_journalled": sum(1 for e in read_journal(journal_path) if e["kind"] == "write-done"),
        "temporaries_found_after_kills": sum(r.get("temporaries_left", 0) for r in rounds),
        "stale_locks_taken_over": sum(1 for r in rounds if r.get("stale_lock_taken_over")),
        "seconds": round(time.monotonic() - started, 1),
        "rounds": rounds,
    }
    if out is not None:
        out.write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segdesk.reliability.crash", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("crash.json"))
    parser.add_argument("--work", type=Path, help="folder for the project (default: a new temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=6.0, help="longest wait before a kill, seconds")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--journal", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.project, args.journal, args.seed)
        return 0
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="segdesk-crash-"))

    def progress(k, moment, problems, facts):
        state = "OK" if not problems else f"FAILED: {problems[0]}"
        print(f"kill {k + 1}/{args.kills} during {moment}: {state} "
              f"(accepted {facts.get('accepted')}, checkpoints {facts.get('checkpoints')})", flush=True)

    report = run(args.kills, work, args.out, args.seed, args.max_delay, progress=progress)
    print(json.dumps({k: report[k] for k in ("kills", "kills_survived", "killed_during", "writes_journalled",
                                             "checkpoints_finished_and_verified", "seconds")}))
    print(f"project and journal kept in {work}", file=sys.stderr)
    return 0 if report["kills_survived"] == report["kills"] else 1


if __name__ == "__main__":
    sys.exit(main())
