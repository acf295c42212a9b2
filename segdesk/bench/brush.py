"""Time of one brush segment on a large image, through the same path as a mouse move in the app:
label document edit, overlay recolour of the changed box, and the canvas repaint."""

from __future__ import annotations

import math
import os
import time

import numpy as np

from segdesk.bench.provenance import machine


def run(size: int = 4096, radius: float = 10.0, segments: int = 400, step: float = 8.0,
        zoom: float | None = None) -> dict:
    """``zoom`` None fits the image in a 1200 x 900 view (the start view); 1.0 is actual pixels."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QRectF
    from PySide6.QtWidgets import QApplication

    from segdesk.core.label_document import LabelDocument
    from segdesk.qt.canvas import Canvas
    from segdesk.qt.overlay import LabelOverlayItem, colour_table

    app = QApplication.instance() or QApplication([])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    doc = LabelDocument(np.zeros((size, size), np.uint8))
    canvas = Canvas()
    canvas.resize(1200, 900)
    canvas.set_image(image)
    overlay = LabelOverlayItem(doc.label, colour_table([(230, 159, 0)]))
    canvas.set_overlay(overlay)
    canvas.show()
    canvas.fit()
    if zoom is not None:
        canvas.set_zoom(zoom)
        canvas.centerOn(size / 2, size / 2)
    app.processEvents()

    times = []
    x, y, angle = size / 2, size / 2, 0.0
    doc.begin_stroke(2, radius)
    doc.stroke_to(x, y)
    for _ in range(segments):
        angle += rng.normal(0, 0.3)
        x = min(size - 1, max(0, x + step * math.cos(angle)))
        y = min(size - 1, max(0, y + step * math.sin(angle)))
        t0 = time.perf_counter()
        box = doc.stroke_to(x, y)
        if box is not None:
            overlay.refresh(box)
            y0, x0, y1, x1 = box  # paint the dirty region now, as the event loop would
            dirty = canvas.mapFromScene(QRectF(x0, y0, x1 - x0, y1 - y0)).boundingRect()
            canvas.viewport().repaint(dirty.adjusted(-2, -2, 2, 2))
        times.append(time.perf_counter() - t0)
    doc.end_stroke()
    canvas.close()
    ms = np.array(times) * 1000
    return {
        "benchmark": "brush",
        "image_size": [size, size],
        "radius": radius,
        "zoom": round(canvas.zoom, 4),
        "segment_length_px": step,
        "segments": segments,
        "median_ms": round(float(np.median(ms)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
        "machine": machine(),
    }
