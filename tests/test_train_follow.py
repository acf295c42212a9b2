"""Training elsewhere: ``segdesk train --follow`` (heartbeat, new labels, SIGKILL) and torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segdesk.core import trainer_presence
from segdesk.core.project import Project
from segdesk.core.project_lock import MODELS, ProjectLock, holder_of
from segdesk.core.storage import TMP_PREFIX
from segdesk.ml.checkpoints import CheckpointStore
from tests.synthetic import make_project

TINY = ["--base-width", "4", "--depth", "2", "--crop", "32", "--batch", "2", "--device", "cpu"]
WAIT_S = 120  # generous: the condition is certain, only its time depends on the machine's load


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _wait_for(condition, proc: subprocess.Popen, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the trainer exited ({proc.returncode}) before {what}: see follower.log")
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {WAIT_S} s")


def _checkpoints(root: Path) -> list[str]:
    return [m["id"] for m in CheckpointStore(root / "models").list()]


def test_presence_is_judged_by_the_readers_clock(tmp_path):
    (tmp_path / "models").mkdir()
    now = [100.0]
    watch = trainer_presence.PresenceWatch(tmp_path, own_pid=-1, stale_after_s=30, clock=lambda: now[0])
    assert watch.look() is None  # nobody trains elsewhere
    trainer_presence.write_heartbeat(tmp_path, "NVIDIA H200", state="training", step=10)
    record = watch.look()
    assert record["device"] == "NVIDIA H200" and trainer_presence.describe(record).endswith("(NVIDIA H200)")
    now[0] += 25
    assert watch.look() is not None  # unchanged for 25 s: still alive
    now[0] += 10
    assert watch.look() is None and watch.seconds_silent() == pytest.approx(35, abs=1)  # gone quiet
    trainer_presence.write_heartbeat(tmp_path, "NVIDIA H200", state="training", step=20)
    assert watch.look()["step"] == 20  # beats again: alive again


def test_a_heartbeat_from_a_skewed_clock_is_never_older_than_the_threshold(tmp_path):
    (tmp_path / "models").mkdir()
    trainer_presence.write_heartbeat(tmp_path, "cpu")
    record = json.loads(trainer_presence.heartbeat_path(tmp_path).read_text())
    record["time"] -= 3600  # the server's clock is an hour behind
    trainer_presence.heartbeat_path(tmp_path).write_text(json.dumps(record))
    watch = trainer_presence.PresenceWatch(tmp_path, own_pid=-1, stale_after_s=30)
    assert watch.look() is None  # first seen: dated by its own clock, so judged stale...
    record["time"] += 5
    trainer_presence.heartbeat_path(tmp_path).write_text(json.dumps(record))
    assert watch.look() is not None  # ...until it changes: alive by the reader's clock


def test_a_follower_waits_out_a_share_that_went_away_and_resumes(tmp_path, monkeypatch):
    """A checkpoint that cannot be written (the share disconnected) stops nothing: the follower
    logs it, waits and trains on; what it writes once the share is back is whole."""
    from segdesk.core import storage
    from segdesk.core.errors import StorageError
    from segdesk.ml.config import TrainConfig
    from segdesk.ml.follow import follow
    from segdesk.ml.train import Trainer

    project, _ = make_project(tmp_path, 6, size=48, seed=5)
    trainer = Trainer(project.root, TrainConfig(crop_size=32, batch_size=2, base_width=4, depth=2, val_every=2),
                      device="cpu")
    real_write, failures = storage.atomic_write_bytes, []

    def share_away_once(path, data):
        if Path(path).suffix == ".safetensors" and not failures:
            failures.append(path)
            raise StorageError(f"Could not write {Path(path).name}: the network share is not reachable.")
        return real_write(path, data)

    monkeypatch.setattr(storage, "atomic_write_bytes", share_away_once)
    seen = []
    result = follow(trainer, should_stop=lambda: bool(_checkpoints(project.root)), on_progress=seen.append,
                    retry_s=0)
    assert failures  # the first checkpoint write failed...
    assert _checkpoints(project.root) == ["0001"]  # ...and the follower went on and wrote one later
    CheckpointStore(project.root / "models").load("0001")
    assert not list((project.root / "models").glob(TMP_PREFIX + "*"))
    assert result.state == "stopped" and any(p.state == "waiting for labels" for p in seen)


def test_a_follower_trains_on_new_labels_and_a_sigkill_leaves_nothing_half_written(tmp_path):
    project, truths = make_project(tmp_path, 8, size=48, seed=3, accept=False)
    ids = list(truths)
    for image_id in ids[:4]:
        project.accept(image_id, truths[image_id] + 1)
    root = project.root
    log = open(tmp_path / "follower.log", "w")  # a file, not a pipe nobody reads while it trains
    proc = subprocess.Popen(
        [sys.executable, "-m", "segdesk", "train", str(root), "--follow", "--heartbeat", "0.2",
         "--val-every", "2", *TINY], stdout=log, stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        record = _wait_for(lambda: trainer_presence.read_heartbeat(root), proc, "heartbeat")
        assert record["pid"] == proc.pid and record["device"].startswith("CPU")
        assert holder_of(root, MODELS)["owner"] == "segdesk train"
        first = _wait_for(lambda: _checkpoints(root), proc, "checkpoint")[-1]
        meta = CheckpointStore(root / "models").list()[-1]
        assert meta["host"] and meta["device"].startswith("CPU")

        # the app accepts more images: the follower takes them up without being told
        for image_id in ids[4:]:
            project.accept(image_id, truths[image_id] + 1)
        _wait_for(lambda: any(m.get("n_train_images", 0) + m.get("n_val_images", 0) == 8
                              for m in CheckpointStore(root / "models").list()), proc,
                  "a checkpoint trained on the 8 accepted images")
        assert _checkpoints(root)[-1] != first
        assert not list(root.glob("labels/" + TMP_PREFIX + "*"))
        project_json = (root / "project.json").read_bytes()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    assert (root / "project.json").read_bytes() == project_json  # the trainer never writes it
    # every file the trainer wrote is whole; a temporary it left is not a file anyone reads
    store = CheckpointStore(root / "models")
    for checkpoint_id in _checkpoints(root):
        state, meta = store.load(checkpoint_id)
        assert state and meta["classes"] == ["class1"]
    for path in (root / "models").glob("*.json"):
        json.loads(path.read_text())
    # the next model writer takes the dead trainer's lock and removes its leftovers
    with ProjectLock.acquire(root, owner="segdesk window", kind=MODELS) as lock:
        assert lock.took_over and "no longer running" in lock.took_over
        Project.open(root, clean=False).clean_models()
        assert not list((root / "models").glob(TMP_PREFIX + "*"))


def test_torchrun_trains_on_two_cpu_processes_and_rank_zero_alone_writes(tmp_path):
    project, _ = make_project(tmp_path, 6, size=48, seed=4)
    root = project.root
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "segdesk", "train", str(root), "--steps", "2", "--val-every", "2", *TINY],
        capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert _checkpoints(root) == ["0001"]  # one checkpoint, not one per rank
    events = [json.loads(line) for line in (root / "log.jsonl").read_text().splitlines()]
    assert [e["id"] for e in events if e["event"] == "checkpoint"] == ["0001"]
    state, meta = CheckpointStore(root / "models").load("0001")
    assert meta["device"].endswith(" x 2") and meta["step"] == 2
    assert all(np.isfinite(v.float().numpy()).all() for v in state.values())
    assert result.stdout.count("trained 2 steps") == 1  # rank 0 reports; rank 1 is silent
    assert holder_of(root, MODELS) is None  # released
