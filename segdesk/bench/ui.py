"""``segdesk bench ui``: how long the GUI event loop stalls while training and proposals run.

A real main window (offscreen unless a display is set) opens a project built from a dataset folder
(images/ + masks/), accepts a few images from their true masks so training starts, then moves to a
new image and presses Segment every ``interval`` seconds. A 5 ms timer measures the gaps of the event
loop; a gap beyond its interval is a stall the user would feel. One brush segment on a large image
is timed too (segdesk.bench.brush).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from segdesk.core.encoding import mask_to_label

log = logging.getLogger(__name__)

TICK_MS = 5


def _project_from(data: Path, root: Path, n_images: int, n_accept: int):
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
    return project


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


def run(data: Path, out: Path, seconds: float = 60.0, interval: float = 2.0, n_images: int = 12,
        device: str | None = None, brush_size: int = 4096) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from segdesk.app import preload_engine
    from segdesk.bench import brush
    from segdesk.qt.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    preload_engine()  # as the app does at start-up
    tmp = Path(tempfile.mkdtemp(prefix="segdesk-bench-ui-"))
    try:
        project = _project_from(Path(data), tmp / "project", n_images, n_accept=3)
        window = MainWindow(settings=QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat),
                            device=device)
        window.show()
        window.open_project(project.root)
        gaps: list[float] = []
        gap_times: list[float] = []
        proposals: list[float] = []
        asked: dict[str, float] = {}
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            gaps.append((now - last[0]) * 1000)
            gap_times.append(now - start[0])
            last[0] = now

        def on_proposal(image_id: str, _label, _checkpoint) -> None:
            if image_id in asked:
                proposals.append(time.perf_counter() - asked.pop(image_id))

        def next_image() -> None:
            window.step_image(+1)
            if window.current is not None:
                asked[window.current.image_id] = time.perf_counter()
                window.segment()

        window.loop.proposal_ready.connect(on_proposal)
        ticker = QTimer(interval=TICK_MS)
        ticker.timeout.connect(tick)
        stepper = QTimer(interval=int(interval * 1000))
        stepper.timeout.connect(next_image)
        start = [time.perf_counter()]
        last[0] = start[0]
        ticker.start()
        stepper.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.001)
        ticker.stop()
        stepper.stop()
        state = window.training_panel.state.full_text()
        step = window.training_panel.step.text()
        window.close()
        stalls = np.array(gaps[1:]) if len(gaps) > 1 else np.zeros(1)
        result = {
            "benchmark": "ui",
            "data": str(data),
            "seconds": seconds,
            "tick_interval_ms": TICK_MS,
            "event_loop_max_ms": round(float(stalls.max()), 2),
            "event_loop_p99_ms": round(float(np.percentile(stalls, 99)), 2),
            "event_loop_median_ms": round(float(np.median(stalls)), 2),
            "stalls_over_50ms_at_s": [round(t, 1) for t, g in zip(gap_times[1:], gaps[1:]) if g > 50],
            "proposals": len(proposals),
            "proposal_median_s": round(float(np.median(proposals)), 3) if proposals else None,
            "training_state_at_end": state,
            "training_steps": step,
            "device": window.status.device.text().removeprefix("device: "),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        }
        result["brush"] = brush.run(size=brush_size, segments=200)
        out = Path(out)
        out.write_text(json.dumps(result, indent=2) + "\n")
        _plot(stalls, out.with_suffix(".png"))
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
