"""Soak: the real window, offscreen, training continuously with a proposal every few seconds.

    python -m segdesk.reliability.soak --minutes 60 --out soak.json

A simulated user (a QTimer on the GUI thread) moves through the images, asks for a proposal of
each, paints a correction stroke and accepts (with the true mask on generated images), so new
labels keep arriving and the trainer never settles. Measured: resident memory (RSS) over time,
threads and open file descriptors, sizes of the caches that could grow (proposal cache, pending
requests, plot points, undo history, unsaved documents), the GUI's longest stall and the GUI
thread's own CPU time in its busiest gap, exceptions raised in slots, and whether the window still
shuts down cleanly at the end. A watchdog thread ends the run with a stack dump if the GUI event
loop stops for ``--deadlock-s`` seconds.

Growth is measured from the end of a warm-up (first checkpoint, first proposal, all images seen
once) to the end, and as a least-squares slope over that part (MB per hour).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from segdesk.core import encoding

log = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")


def rss_mb() -> float:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _generate(folder: Path, n: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """Gray images with bright discs (class 1) and grey squares (class 2) on noise; returns file
    name -> true mask (0 background, 1, 2)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truths = {}
    for i in range(n):
        img = rng.normal(60, 12, (size, size)).clip(0, 255).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        for _ in range(int(rng.integers(2, 6))):
            r = int(rng.integers(size // 24, size // 8))
            cv2.circle(mask, (int(rng.integers(r, size - r)), int(rng.integers(r, size - r))), r, 1, -1)
        for _ in range(int(rng.integers(0, 3))):  # class 2, absent from some images
            side = int(rng.integers(size // 16, size // 6))
            y, x = int(rng.integers(0, size - side)), int(rng.integers(0, size - side))
            mask[y:y + side, x:x + side] = 2
        img[mask == 1] = rng.normal(190, 10, int((mask == 1).sum())).clip(0, 255).astype(np.uint8)
        img[mask == 2] = rng.normal(125, 8, int((mask == 2).sum())).clip(0, 255).astype(np.uint8)
        name = f"soak{i:03d}.png"
        cv2.imwrite(str(folder / name), img)
        truths[name] = mask
    return truths


def _given(images: Path, masks: Path | None, n: int) -> tuple[list[Path], dict[str, np.ndarray]]:
    from segdesk.core import imageio

    files = sorted(p for p in images.iterdir() if p.suffix.lower() in imageio.SUPPORTED_SUFFIXES)[:n]
    truths = {}
    for f in files:
        if masks is not None:
            m = next((masks / (f.stem + s) for s in (".png", ".tif", f.suffix) if (masks / (f.stem + s)).exists()),
                     None)
            if m is not None:
                px = imageio.read_image(m).pixels
                truths[f.name] = ((px if px.ndim == 2 else px[..., 0]) > 0).astype(np.uint8)
    return files, truths


class Soak:
    """Drives the window from a timer and samples the process."""

    def __init__(self, window, truths: dict[str, np.ndarray], every_s: float, seed: int):
        from PySide6.QtCore import QTimer

        self.w = window
        self.truths = truths
        self.rng = random.Random(seed)
        self.ticks = 0
        self.proposals = 0
        self.proposal_latencies: list[float] = []
        self.accepts = 0
        self.strokes = 0
        self.checkpoints: list[str] = []
        self.last_step = 0
        self.errors: list[str] = []
        self.samples: list[dict] = []
        self.max_gap = 0.0
        self.last_beat = time.monotonic()
        # the GUI thread's own CPU seconds in one beat's gap: its own work, which a loaded machine
        # does not inflate (a long gap with little of it is other programs holding the CPU)
        self.max_gap_busy = 0.0
        self._last_busy = time.thread_time()
        self._asked_at: dict[str, float] = {}
        self._index = 0
        self._wanted: str | None = None  # the image asked for; it arrives from the reader thread
        window.session.image_shown.connect(self._on_shown)
        self._beat = QTimer(interval=50)
        self._beat.timeout.connect(self._on_beat)
        self._beat.start()
        self._drive = QTimer(interval=int(every_s * 1000))
        self._drive.timeout.connect(self._tick)
        self._drive.start()

    def connect_loop(self) -> None:
        loop = self.w.loop
        loop.proposal_ready.connect(self._on_proposal)
        loop.checkpoint_changed.connect(self.checkpoints.append)
        loop._trainer.progress.connect(lambda d: setattr(self, "last_step", int(d.get("step") or 0)))
        loop.error.connect(lambda title, m: self.errors.append(f"{title}: {m}"))

    def _on_beat(self) -> None:
        now, busy = time.monotonic(), time.thread_time()
        self.max_gap = max(self.max_gap, now - self.last_beat)
        self.max_gap_busy = max(self.max_gap_busy, busy - self._last_busy)
        self.last_beat, self._last_busy = now, busy

    def _on_proposal(self, image_id: str, label, checkpoint: str) -> None:
        self.proposals += 1
        asked = self._asked_at.pop(image_id, None)
        if asked is not None:
            self.proposal_latencies.append(time.monotonic() - asked)

    def _truth(self, image_id: str) -> np.ndarray | None:
        entry = self.w.project.image(image_id)
        return self.truths.get(Path(entry.source).name)

    def _tick(self) -> None:
        """One user action: correct and accept the current image, or move on and ask for a proposal."""
        try:
            self.ticks += 1
            w = self.w
            ids = [e.id for e in w.project.images]
            cur = w.current
            if cur is not None and self.ticks % 2 == 0:
                doc = cur.doc
                h, wd = doc.shape
                doc.begin_stroke(self.rng.choice([1, 2]), self.rng.uniform(2, 8))
                for _ in range(self.rng.randint(2, 8)):
                    doc.stroke_to(self.rng.uniform(0, wd), self.rng.uniform(0, h))
                doc.end_stroke()
                self.strokes += 1
                w.saver.edited()
                truth = self._truth(cur.image_id)
                if truth is not None and self.rng.random() < 0.7:
                    doc.set_label(encoding.mask_to_label(truth))  # the user corrected it all the way
                w.accept_current()
                self.accepts += 1
            self._index = (self._index + 1) % len(ids)
            self._wanted = ids[self._index]
            w.show_image(self._wanted)  # Segment is pressed when it is on screen (_on_shown)
        except Exception:  # noqa: BLE001 - a soak records, never stops on the first error
            self.errors.append(traceback.format_exc(limit=6))

    def _on_shown(self, image_id: str) -> None:
        """The image the soak moved to is on screen: the user presses Segment."""
        if image_id != self._wanted:
            return
        try:
            self._asked_at[image_id] = time.monotonic()
            self.w.segment()
        except Exception:  # noqa: BLE001 - a soak records, never stops on the first error
            self.errors.append(traceback.format_exc(limit=6))

    def sample(self, elapsed: float) -> dict:
        w = self.w
        loop = w.loop
        hist = w.current.doc.history if w.current is not None else None
        s = {
            "t_s": round(elapsed, 1),
            "rss_mb": round(rss_mb(), 1),
            "threads": threading.active_count(),
            "fds": open_fds(),
            "proposals": self.proposals,
            "accepts": self.accepts,
            "checkpoints": len(self.checkpoints),
            "train_step": self.last_step,
            "proposal_cache": len(loop._cache) if loop else 0,
            "pending_requests": len(loop._pending) if loop else 0,
            "plot_points": len(w.training_panel.plot.loss) + len(w.training_panel.plot.dice),
            "undo_steps": len(hist) if hist is not None else 0,
            "undo_bytes": hist.nbytes if hist is not None else 0,
            "unsaved_documents": len(w.saver._unsaved),
            "max_gui_stall_s": round(self.max_gap, 3),
            "max_gui_busy_s": round(self.max_gap_busy, 3),
        }
        self.samples.append(s)
        return s


def _slope_mb_per_hour(samples: list[dict]) -> float | None:
    if len(samples) < 3:
        return None
    t = np.array([s["t_s"] for s in samples], float) / 3600
    y = np.array([s["rss_mb"] for s in samples], float)
    if np.ptp(t) == 0:
        return None
    return float(np.polyfit(t, y, 1)[0])


def run(minutes: float, out: Path | None = None, work: Path | None = None, every_s: float = 3.0,
        sample_s: float = 15.0, n_images: int = 24, size: int = 256, images: Path | None = None,
        masks: Path | None = None, device: str | None = None, tiny: bool = False, seed: int = 0,
        deadlock_s: float = 60.0, warmup_s: float | None = None, echo=None, until_proposals: int = 0,
        at_most_s: float = 600.0) -> dict:
    """``until_proposals``: go on past ``minutes`` until that many proposals were shown (the first
    needs a trained checkpoint, whose time depends on the machine's load), for at most ``at_most_s``
    more seconds."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QCoreApplication, QEvent, QSettings, QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    from segdesk.app import preload_engine
    from segdesk.core.project import Project
    from segdesk.ml.config import TrainConfig
    from segdesk.qt.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    preload_engine()
    work = work or Path(tempfile.mkdtemp(prefix="segdesk-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    if images is None:
        truths = _generate(work / "images", n_images, size, seed)
        sources: list[Path] = [work / "images"]
    else:
        files, truths = _given(images, masks, n_images)
        sources = files
    project = Project.create(work / "project", ["disc", "square"] if images is None else ["object"])
    project.add_images(sources)
    # three accepted images to start from, as a user would have after a few minutes
    for entry in project.images[:3]:
        truth = truths.get(Path(entry.source).name)
        label = encoding.mask_to_label(truth) if truth is not None else encoding.merge_accept(np.zeros(entry.shape, np.uint8))
        project.accept(entry.id, label)

    dialogs: list[str] = []
    saved_boxes = (QMessageBox.warning, QMessageBox.information)
    QMessageBox.warning = staticmethod(lambda _p, t, m, *a, **k: dialogs.append(f"{t}: {m}"))
    QMessageBox.information = staticmethod(lambda _p, t, m, *a, **k: dialogs.append(f"{t}: {m}"))
    slot_errors: list[str] = []
    previous_hook = sys.excepthook
    sys.excepthook = lambda et, ev, tb: slot_errors.append("".join(traceback.format_exception(et, ev, tb))[-1500:])

    config = TrainConfig(crop_size=64, batch_size=2, base_width=8, depth=3, val_every=10) if tiny else TrainConfig()
    settings = QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, train_config=config, device=device)
    w.resize(1200, 800)
    w.show()
    baseline_rss = rss_mb()
    t_start = time.monotonic()
    soak = Soak(w, truths, every_s, seed)
    if not w.open_project(project.root):
        raise RuntimeError(f"could not open the soak project: {dialogs}")
    soak.connect_loop()
    w.loop.start_training()

    stop_at = t_start + minutes * 60
    warmup = warmup_s if warmup_s is not None else min(300.0, max(20.0, minutes * 60 * 0.1))
    deadlock = {"hit": False}
    finished = threading.Event()

    def watchdog():
        while not finished.wait(1.0):
            if time.monotonic() - soak.last_beat > deadlock_s:
                deadlock["hit"] = True
                with open(work / "deadlock-stacks.txt", "w") as f:
                    faulthandler.dump_traceback(file=f, all_threads=True)
                report = {"deadlock": True, "after_s": round(time.monotonic() - t_start, 1),
                          "stacks": str(work / "deadlock-stacks.txt"), "samples": soak.samples}
                if out is not None:
                    out.write_text(json.dumps(report, indent=2))
                print(json.dumps({"deadlock": True, "stacks": str(work / "deadlock-stacks.txt")}), flush=True)
                os._exit(2)

    guard = threading.Thread(target=watchdog, daemon=True, name="soak-watchdog")
    guard.start()

    quitting = {"asked": False}

    def quit_once():
        """Qt 6 posts quit() as a Quit event. A second one still queued when exec() returns is
        delivered by the next nested event loop, where it sets Qt's quitNow: from then on every
        QEventLoop.exec (qtbot.wait's too) returns at once and no queued signal is delivered
        (what broke every GUI test that ran after the soak in the suite)."""
        if not quitting["asked"]:
            quitting["asked"] = True
            app.quit()

    def on_sample():
        s = soak.sample(time.monotonic() - t_start)
        if echo is not None:
            echo(s)
        if time.monotonic() >= stop_at and soak.proposals >= until_proposals:
            quit_once()

    sampler = QTimer(interval=int(sample_s * 1000))
    sampler.timeout.connect(on_sample)
    sampler.start()
    deadline = QTimer(singleShot=True, interval=int((minutes * 60 + (at_most_s if until_proposals else 0)) * 1000) + 50)
    deadline.timeout.connect(quit_once)
    deadline.start()
    app.exec()
    deadline.stop()
    sampler.stop()
    QCoreApplication.removePostedEvents(app, QEvent.Type.Quit)
    soak._drive.stop()
    last = soak.sample(time.monotonic() - t_start)
    soak.last_beat = time.monotonic() + 60  # closing may block the GUI for a while: not a deadlock

    threads = (w.loop._trainer_thread.thread, w.loop._inference_thread.thread) if w.loop else ()
    t0 = time.monotonic()
    w.close()
    close_s = time.monotonic() - t0
    stopped = all(t.isFinished() for t in threads)
    soak._beat.stop()
    finished.set()
    guard.join()
    app.processEvents()
    sys.excepthook = previous_hook
    QMessageBox.warning, QMessageBox.information = saved_boxes

    after = [s for s in soak.samples if s["t_s"] >= warmup]
    first = after[0] if after else soak.samples[0]
    report = {
        "minutes": round((time.monotonic() - t_start) / 60, 2),
        "device": w.status.device.text() if hasattr(w, "status") else "",
        "config": {"tiny": tiny, "images": len(project.images), "image_size": size if images is None else "given",
                   "every_s": every_s},
        "rss_mb": {"before_window": round(baseline_rss, 1), "after_warmup": first["rss_mb"],
                   "end": last["rss_mb"], "max": max(s["rss_mb"] for s in soak.samples),
                   "growth_after_warmup": round(last["rss_mb"] - first["rss_mb"], 1),
                   "slope_mb_per_hour_after_warmup": _slope_mb_per_hour(after),
                   "warmup_s": warmup},
        "threads": {"after_warmup": first["threads"], "end": last["threads"]},
        "fds": {"after_warmup": first["fds"], "end": last["fds"]},
        "proposals": soak.proposals,
        "proposal_latency_s": ({"median": round(float(np.median(soak.proposal_latencies)), 3),
                                "p95": round(float(np.percentile(soak.proposal_latencies, 95)), 3)}
                               if soak.proposal_latencies else None),
        "accepts": soak.accepts,
        "strokes": soak.strokes,
        "checkpoints_loaded": len(soak.checkpoints),
        "train_steps": soak.last_step,
        "max_gui_stall_s": round(soak.max_gap, 3),
        "max_gui_busy_s": round(soak.max_gap_busy, 3),
        "bounded": {k: {"max": max(s[k] for s in soak.samples), "end": last[k]}
                    for k in ("proposal_cache", "pending_requests", "plot_points", "undo_steps",
                              "unsaved_documents")},
        "deadlock": deadlock["hit"],
        "close_s": round(close_s, 2),
        "workers_stopped": stopped,
        "slot_exceptions": slot_errors[:20],
        "n_slot_exceptions": len(slot_errors),
        "driver_errors": soak.errors[:20],
        "dialogs": dialogs[:20],
        "samples": soak.samples,
        "work": str(work),
    }
    if out is not None:
        out.write_text(json.dumps(report, indent=2, default=str))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segdesk.reliability.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("soak.json"))
    parser.add_argument("--work", type=Path, help="folder for the project (default: a new temporary one)")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between user actions")
    parser.add_argument("--sample", type=float, default=15.0, help="seconds between memory samples")
    parser.add_argument("--images", type=Path, help="use these images instead of generated ones")
    parser.add_argument("--masks", type=Path, help="true masks (same stems) for --images")
    parser.add_argument("--n-images", type=int, default=24)
    parser.add_argument("--size", type=int, default=256, help="side of generated images")
    parser.add_argument("--device", help="auto (default), cpu, cuda or mps")
    parser.add_argument("--tiny", action="store_true", help="a small model (quick runs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def echo(s):
        print(json.dumps({k: s[k] for k in ("t_s", "rss_mb", "threads", "fds", "proposals", "accepts",
                                            "checkpoints", "train_step", "max_gui_stall_s")}), flush=True)

    report = run(args.minutes, args.out, args.work, args.every, args.sample, args.n_images, args.size,
                 args.images, args.masks, args.device, args.tiny, args.seed, echo=echo)
    summary = {k: report[k] for k in ("minutes", "rss_mb", "proposals", "accepts", "checkpoints_loaded",
                                      "train_steps", "max_gui_stall_s", "deadlock", "workers_stopped",
                                      "n_slot_exceptions")}
    print(json.dumps(summary, indent=2))
    ok = (not report["deadlock"] and report["workers_stopped"] and not report["n_slot_exceptions"]
          and not report["driver_errors"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
