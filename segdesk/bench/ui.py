"""``segdesk bench ui``: how long the GUI event loop stalls while training and proposals run.

A real main window (offscreen unless a display is set) opens a project built from a dataset folder
(images/ + masks/), with three images accepted from their true masks so training starts. It starts
from a judged model (``init="bundled"``: the bundled nuclei model as the current checkpoint, the
one ``segdesk demo`` uses), so proposals run from the first second instead of being withheld until
training has judged a model of its own (widened to read clicks, so clicks are answered from the
first second too); ``init="scratch"`` starts with no model. Every
``interval`` seconds the bench acts as a user: it moves to the next image (its proposal is asked
for as it arrives), and every third time it accepts the image on screen from its true mask
instead (accept goes on to the next image by itself); once the model reads clicks, the action after
an accept or a move is a click on the image on screen through the window's Click tool, where the
clicks protocol puts it (segdesk.core.clicks.next_click against the true mask), timed to its answer. A 5 ms timer measures the gaps of the event
loop, from the first proposal on (start-up, until then, is reported apart: ``startup_s``,
``startup_max_ms``); a gap beyond its interval is a stall the user would feel, and for the longest ones the JSON
says where the GUI thread was meanwhile (segdesk.bench.stall_watch). An accept counts once the
window reports it on disk (it is written off the GUI thread). ``busy_cores`` processes spin
meanwhile, as another program would. One brush segment on a large image is timed too
(segdesk.bench.brush).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from segdesk.bench.provenance import machine
from segdesk.core import storage
from segdesk.core.clicks import next_click
from segdesk.core.encoding import label_to_mask, label_value, mask_to_label
from segdesk.core.errors import SegdeskError

log = logging.getLogger(__name__)

TICK_MS = 5
INITS = ("bundled", "scratch")
ACCEPT_EVERY = 3  # of the bench's actions, every third is an accept
STARTUP_LIMIT_S = 60.0  # longest wait for the first proposal before the measured seconds begin


def _project_from(data: Path, root: Path, n_images: int, n_accept: int, init: str):
    from segdesk.core.project import Project

    masks = {p.stem: p for p in (data / "masks").glob("*.png")}
    images = sorted(p for p in (data / "images").iterdir() if p.stem in masks)[:n_images]
    if len(images) < n_accept + 2:
        raise SystemExit(f"{data} has too few image/mask pairs ({len(images)})")
    n_classes = max(1, max(int(cv2.imread(str(masks[p.stem]), cv2.IMREAD_UNCHANGED).max()) for p in images))
    project = Project.create(root, [f"class {k}" for k in range(1, n_classes + 1)])
    project.add_images(images)
    for entry in project.images[:n_accept]:
        mask = cv2.imread(str(masks[Path(entry.source).stem]), cv2.IMREAD_UNCHANGED)
        project.accept(entry.id, mask_to_label(mask))
    if init == "bundled":
        from segdesk.demo import _install_model, demo_model_dir

        _install_model(demo_model_dir(), root / "models")  # the current checkpoint: proposes at once
        _widen_for_clicks(root / "models", n_classes)
    return project, masks


def _widen_for_clicks(models: Path, n_classes: int) -> None:
    """Make the current checkpoint read clicks (UNet.with_prompts: zero weights on the prompts, so it
    proposes as before and answers clicks through the click tilt alone), so the bench's clicks run
    from the first second and cost what a trained click model's do."""
    from segdesk.core.clicks import prompt_channels
    from segdesk.ml.checkpoints import CheckpointStore
    from segdesk.ml.unet import UNet

    store = CheckpointStore(models)
    checkpoint_id, state_dict, meta = store.load_current()
    model = UNet.from_arch(meta["arch"])
    model.load_state_dict(state_dict)
    wider = model.with_prompts(prompt_channels(n_classes)).eval()
    meta = {**meta, "arch": wider.arch_dict(), "prompts": "clicks", "parent": checkpoint_id}
    store.save(wider.state_dict(), meta, onnx_model=wider)


def _spin(stop) -> None:
    """Keep one core busy until ``stop`` is set (another program on a shared machine)."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def _busy(n: int):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_spin, args=(stop,), daemon=True) for _ in range(n)]
    for proc in procs:
        proc.start()
    return stop, procs


def _stats(values: list[float], digits: int = 3) -> dict:
    if not values:
        return {"n": 0, "median": None, "max": None}
    return {"n": len(values), "median": round(float(np.median(values)), digits), "max": round(float(max(values)), digits)}


def _plot(gaps_ms: np.ndarray, out: Path) -> None:
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QColor, QImage, QPainter, QPen

    w, h, pad = 900, 320, 40
    img = QImage(w, h, QImage.Format.Format_RGB32)
    img.fill(QColor("white"))
    p = QPainter(img)
    top = max(50.0, float(gaps_ms.max()) * 1.1)
    p.setPen(QPen(QColor("#cccccc"), 1))
    for level in (16, 50):
        y = h - pad - level / top * (h - 2 * pad)
        p.drawLine(pad, int(y), w - 10, int(y))
        p.drawText(2, int(y) + 4, f"{level} ms")
    p.setPen(QPen(QColor("#0072b2"), 1))
    n = len(gaps_ms)
    for i, g in enumerate(gaps_ms):
        x = pad + i / max(1, n - 1) * (w - pad - 10)
        p.drawLine(QPointF(x, h - pad), QPointF(x, h - pad - g / top * (h - 2 * pad)))
    p.setPen(QColor("black"))
    p.drawText(pad, 20, "GUI event-loop gaps while training and proposals run (ms)")
    p.drawText(pad, h - 10, "time →")
    p.end()
    img.save(str(out))


def run(data: Path, out: Path, seconds: float = 60.0, interval: float = 2.0, n_images: int = 40,
        device: str | None = None, brush_size: int = 4096, init: str = "bundled", busy_cores: int = 0) -> dict:
    if init not in INITS:
        raise SegdeskError(f"init must be one of {', '.join(INITS)}, not {init!r}")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from segdesk.app import freeze_startup_objects, preload_engine
    from segdesk.bench import brush
    from segdesk.bench.stall_watch import StallWatch
    from segdesk.qt.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    preload_engine()  # as the app does at start-up
    tmp = Path(tempfile.mkdtemp(prefix="segdesk-bench-ui-"))
    stop_busy, busy = _busy(busy_cores) if busy_cores > 0 else (None, [])
    try:
        project, masks = _project_from(Path(data), tmp / "project", n_images, n_accept=3, init=init)
        # the labels the bench "paints", read before measuring: reading them is not the window's work
        truths = {e.id: mask_to_label(cv2.imread(str(masks[Path(e.source).stem]), cv2.IMREAD_UNCHANGED))
                  for e in project.images}
        window = MainWindow(settings=QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat),
                            device=device)
        window.show()
        window.open_project(project.root)
        freeze_startup_objects()  # as the app does once its window is up
        gaps: list[float] = []
        gap_times: list[float] = []
        # CPU seconds of the GUI thread and of the whole process at each tick: a stall in which the
        # GUI thread used the CPU is our code on it; one in which the process used little was
        # other programs holding the CPU
        cpu: list[tuple[float, float]] = []
        counts = {"proposals_shown": 0, "proposals_run": 0, "withheld": 0, "proposal_failures": 0,
                  "switches_asked": 0, "switches_shown": 0, "switches_failed": 0, "accepts": 0,
                  "accepts_refused": 0, "clicks_asked": 0, "clicks_answered": 0}
        click_s: list[float] = []  # from a click to its answer in the label
        click_asked: list[float] = []
        proposal_s: list[float] = []  # from asking for an image to its proposal on screen
        switch_s: list[float] = []  # from asking for an image to it on screen
        asked: dict[str, float] = {}
        switch_asked: dict[str, float] = {}
        accept_asked: dict[str, float] = {}
        accept_s: list[float] = []  # from accepting to the accept on disk (written off the GUI thread)
        checkpoints: set[str] = set()
        events: list[tuple[float, str]] = []  # when the bench acted and models changed, to place the stalls

        def note(what: str) -> None:
            events.append((round(time.perf_counter() - start[0], 2), what))
        last = [time.perf_counter()]
        actions = [0]

        def tick() -> None:
            now = time.perf_counter()
            gaps.append((now - last[0]) * 1000)
            gap_times.append(now - start[0])
            last[0] = now
            cpu.append((time.thread_time(), time.process_time()))

        def on_proposal(image_id: str, _label, checkpoint, _learning=False, _request=0) -> None:
            counts["proposals_run"] += 1
            checkpoints.add(checkpoint)
            cur = window.current
            if cur is not None and cur.image_id == image_id:
                counts["proposals_shown"] += 1
                if image_id in asked:
                    proposal_s.append(time.perf_counter() - asked.pop(image_id))

        withheld: set[str] = set()  # told as withheld: their proposal_failed is no failure

        def on_withheld(image_id: str) -> None:
            counts["withheld"] += 1
            withheld.add(image_id)

        def on_failed(image_id: str, _message: str) -> None:
            if image_id in withheld:
                withheld.discard(image_id)
            else:
                counts["proposal_failures"] += 1

        def on_shown(image_id: str) -> None:
            if image_id in switch_asked:
                counts["switches_shown"] += 1
                switch_s.append(time.perf_counter() - switch_asked.pop(image_id))
                asked[image_id] = time.perf_counter()  # auto-propose asked for it as it arrived

        def on_image_failed(_image_id: str) -> None:
            counts["switches_failed"] += 1

        def on_accepted(image_id: str) -> None:
            counts["accepts"] += 1
            if image_id in accept_asked:
                accept_s.append(time.perf_counter() - accept_asked.pop(image_id))

        def on_error(title: str, _message: str) -> None:
            if title == "Not accepted":
                counts["accepts_refused"] += 1

        def on_click_answered(_image_id: str) -> None:
            counts["clicks_answered"] += 1
            if click_asked:
                click_s.append(time.perf_counter() - click_asked.pop())

        def click(cur) -> bool:
            """A protocol click on the image on screen through the Click tool; False when none can be made."""
            if window.clicks.why_no_clicks() or window.clicks.pending or len(window.clicks.clicks) >= 3:
                return False
            placed = next_click(label_to_mask(cur.doc.label), label_to_mask(truths[cur.image_id]))
            if placed is None:
                return False
            window.controller.set_value(label_value(placed.class_number))
            note("click")
            counts["clicks_asked"] += 1
            click_asked[:] = [time.perf_counter()]
            window.clicks.click(float(placed.x), float(placed.y), placed.positive)
            return True

        def act() -> None:
            actions[0] += 1
            cur = window.current
            if cur is None or window.session.switching_to is not None:
                return  # the last switch has not arrived yet: a user would wait too
            if actions[0] % ACCEPT_EVERY == 2 and click(cur):
                return
            shown = window.project  # the window's own Project: it records the accepts
            if actions[0] % ACCEPT_EVERY == 0 and cur.image_id not in shown.accepted_ids():
                cur.doc.set_label(truths[cur.image_id])  # the user corrected it all the way
                note("accept")
                accept_asked[cur.image_id] = time.perf_counter()
                window.accept_current()  # counted when the writer has it on disk (on_accepted)
            else:
                note("next image")
                window.step_image(+1)
            target = window.session.switching_to
            if target is not None:
                counts["switches_asked"] += 1
                switch_asked[target] = time.perf_counter()

        window.loop.proposal_ready.connect(on_proposal)
        window.loop.proposal_withheld.connect(on_withheld)
        window.loop.proposal_failed.connect(on_failed)
        window.session.image_shown.connect(on_shown)
        window.session.image_failed.connect(on_image_failed)
        window.session.image_accepted.connect(on_accepted)
        window.clicks.answered.connect(on_click_answered)
        window.session.error.connect(on_error)
        window.loop.checkpoint_changed.connect(lambda c: note(f"model {c} proposes"))
        ticker = QTimer(interval=TICK_MS)
        ticker.timeout.connect(tick)
        stepper = QTimer(interval=int(interval * 1000))
        stepper.timeout.connect(act)
        start = [time.perf_counter()]
        last[0] = start[0]
        watch = StallWatch(last)
        watch.start()
        ticker.start()
        # start-up (the window's first paint, the models' first load, the first proposal) is timed on
        # its own: the measured seconds are those of a user at work
        ready_by = time.monotonic() + STARTUP_LIMIT_S
        while counts["proposals_run"] == 0 and time.monotonic() < ready_by:
            app.processEvents()
            time.sleep(0.001)
        startup = {"startup_s": round(time.perf_counter() - start[0], 2),
                   "startup_max_ms": round(max(gaps[1:], default=0.0), 1)}
        del gaps[:], gap_times[:], cpu[:], events[:]
        counts["proposals_run"] = counts["proposals_shown"] = 0
        proposal_s.clear()
        start[0] = last[0] = time.perf_counter()
        stepper.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.001)
        ticker.stop()
        stepper.stop()
        watch.stop()
        state = window.training_panel.state.full_text()
        step = window.training_panel.step.text()
        model_at_end = window.loop.active_checkpoint
        window.close()
        stalls = np.array(gaps[1:]) if len(gaps) > 1 else np.zeros(1)
        gui_cpu = [(cpu[i][0] - cpu[i - 1][0]) * 1000 for i in range(1, len(cpu))]
        result = {
            "benchmark": "ui",
            "data": str(data),
            "init": init,
            "seconds": seconds,
            "action_interval_s": interval,
            "busy_cores": busy_cores,
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "tick_interval_ms": TICK_MS,
            **startup,
            "event_loop_max_ms": round(float(stalls.max()), 2),
            "event_loop_p99_ms": round(float(np.percentile(stalls, 99)), 2),
            "event_loop_median_ms": round(float(np.median(stalls)), 2),
            "event_loop_max_after_1s_ms": round(float(max([g for t, g in zip(gap_times[1:], gaps[1:]) if t > 1.0],
                                                          default=0.0)), 2),
            "stalls_over_30ms": int((stalls > 30).sum()),
            # the GUI thread's own CPU time in each gap: its work, whatever else holds the machine
            "gui_thread_cpu_per_gap_max_ms": round(max(gui_cpu, default=0.0), 2),
            "gui_thread_cpu_per_gap_p99_ms": round(float(np.percentile(gui_cpu, 99)) if gui_cpu else 0.0, 2),
            # stalls over 30 ms in which this process got under a quarter of one core: other programs had it
            "stalls_over_30ms_starved": sum(1 for i in range(1, len(gaps))
                                            if gaps[i] > 30 and (cpu[i][1] - cpu[i - 1][1]) * 1000 < gaps[i] / 4),
            "stalls_over_50ms_at_s": [round(t, 1) for t, g in zip(gap_times[1:], gaps[1:]) if g > 50],
            # where the GUI thread was during each (segdesk.bench.stall_watch)
            "longest_stalls": [{"at_s": round(gap_times[i], 2), "ms": round(gaps[i], 1),
                                "gui_thread_cpu_ms": round((cpu[i][0] - cpu[i - 1][0]) * 1000, 1),
                                "process_cpu_ms": round((cpu[i][1] - cpu[i - 1][1]) * 1000, 1),
                                "gui_thread": watch.during(start[0] + gap_times[i] - gaps[i] / 1000,
                                                           start[0] + gap_times[i])}
                               for i in sorted(range(1, len(gaps)), key=lambda i: -gaps[i])[:8]],
            "events": [{"at_s": t, "what": w} for t, w in events],
            # proposals_shown: for the image on screen; proposals_run: every answer, prefetches included
            "proposals": counts["proposals_shown"],
            **{k: v for k, v in counts.items() if k != "proposals_shown"},
            "proposal_median_s": _stats(proposal_s)["median"],
            "proposal_latency_s": _stats(proposal_s),
            "switch_latency_s": _stats(switch_s),
            "accept_to_disk_s": _stats(accept_s),
            "click_latency_s": _stats(click_s),
            "checkpoints_that_proposed": sorted(checkpoints),
            "model_at_end": model_at_end,
            "training_state_at_end": state,
            "training_steps": step,
            "device": window.status.device.text().removeprefix("device: "),
            "machine": machine(),
        }
        result["brush"] = brush.run(size=brush_size, segments=200)
        out = Path(out)
        storage.atomic_write_json(out, result)
        _plot(stalls, out.with_suffix(".png"))
        return result
    finally:
        if stop_busy is not None:
            stop_busy.set()
            for proc in busy:
                proc.join(5)
        shutil.rmtree(tmp, ignore_errors=True)
