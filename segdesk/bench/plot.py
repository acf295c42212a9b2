"""Small line and bar charts drawn with OpenCV, for the benchmark PNGs (no plotting library needed).

Each chart is a panel with a title, y-axis ticks and one or more series; panels stack vertically
into one image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

WIDTH = 900
PANEL_HEIGHT = 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 36, 40
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Wong palette, BGR
COLOURS = [(178, 114, 0), (0, 94, 213), (115, 158, 0), (167, 121, 204), (0, 159, 230), (233, 180, 86)]
_GRID = (225, 225, 225)
_TEXT = (30, 30, 30)


@dataclass
class Series:
    label: str
    y: list[float | None]  # None: a gap
    x: list[float] | None = None  # default 1..n
    bars: bool = False


@dataclass
class Panel:
    title: str
    series: list[Series]
    y_range: tuple[float, float] | None = None  # default: from the data
    x_label: str = ""
    y_log: bool = False
    x_ticks: list[tuple[float, str]] | None = None
    hlines: list[tuple[float, str]] = field(default_factory=list)


def _text(img, text, org, scale=0.45, colour=_TEXT, thickness=1):
    cv2.putText(img, text, (int(org[0]), int(org[1])), _FONT, scale, colour, thickness, cv2.LINE_AA)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.0e}"
    return f"{v:g}"


def _draw_panel(panel: Panel) -> np.ndarray:
    img = np.full((PANEL_HEIGHT, WIDTH, 3), 255, np.uint8)
    x0, x1 = _LEFT, WIDTH - _RIGHT
    y0, y1 = _TOP, PANEL_HEIGHT - _BOTTOM
    _text(img, panel.title, (x0, 22), 0.55, thickness=1)

    pts = [(x, y) for s in panel.series for x, y in zip(s.x or range(1, len(s.y) + 1), s.y) if y is not None]
    if not pts:
        _text(img, "(no data)", ((x0 + x1) / 2 - 30, (y0 + y1) / 2))
        return img
    xs = [float(p[0]) for p in pts]
    ys = [float(p[1]) for p in pts]

    def ty(v: float) -> float:
        return math.log10(max(v, 1e-12)) if panel.y_log else v

    lo, hi = panel.y_range or (min(min(ys), 0.0) if not panel.y_log else min(ys), max(ys) * 1.1)
    lo, hi = ty(lo), ty(hi)
    if hi <= lo:
        hi = lo + 1.0
    xmin, xmax = min(xs), max(xs)
    if any(s.bars for s in panel.series):
        xmin, xmax = xmin - 0.6, xmax + 0.6
    if xmax <= xmin:
        xmin, xmax = xmin - 1, xmax + 1

    def px(x: float) -> int:
        return int(round(x0 + (x - xmin) / (xmax - xmin) * (x1 - x0)))

    def py(y: float) -> int:
        v = min(max(ty(y), lo), hi)
        return int(round(y1 - (v - lo) / (hi - lo) * (y1 - y0)))

    ticks = [10**e for e in range(math.floor(lo), math.ceil(hi) + 1)] if panel.y_log else _nice_ticks(lo, hi)
    for t in ticks:
        if lo <= ty(t) <= hi:
            cv2.line(img, (x0, py(t)), (x1, py(t)), _GRID, 1)
            _text(img, _fmt(t), (4, py(t) + 4), 0.4)
    for value, label in panel.hlines:
        cv2.line(img, (x0, py(value)), (x1, py(value)), (120, 120, 120), 1, cv2.LINE_AA)
        _text(img, label, (x1 - 8 * len(label) - 4, py(value) - 4), 0.38, (90, 90, 90))
    cv2.rectangle(img, (x0, y0), (x1, y1), (150, 150, 150), 1)
    if panel.x_ticks:
        for x, label in panel.x_ticks:
            _text(img, label, (px(x) - 4 * len(label), y1 + 16), 0.4)
    else:
        for t in _nice_ticks(xmin, xmax, 10):
            if t != int(t):
                continue
            if xmin <= t <= xmax:
                _text(img, _fmt(t), (px(t) - 6, y1 + 16), 0.4)
    _text(img, panel.x_label, ((x0 + x1) / 2 - 4 * len(panel.x_label), PANEL_HEIGHT - 6), 0.42)

    bar_series = [s for s in panel.series if s.bars]
    legend_x = x0 + 8
    for i, s in enumerate(panel.series):
        colour = COLOURS[i % len(COLOURS)]
        sx = s.x or list(range(1, len(s.y) + 1))
        if s.bars:
            k, n = bar_series.index(s), len(bar_series)
            width = (px(1) - px(0)) * 0.8 / n if len(sx) > 1 or n > 1 else 20
            for x, y in zip(sx, s.y):
                if y is None:
                    continue
                left = px(x) - (px(1) - px(0)) * 0.4 + k * width
                cv2.rectangle(img, (int(left), py(y)), (int(left + width) - 1, py(lo if not panel.y_log else 10**lo)),
                              colour, -1)
        else:
            prev = None
            for x, y in zip(sx, s.y):
                if y is None:
                    prev = None
                    continue
                p = (px(x), py(y))
                if prev is not None:
                    cv2.line(img, prev, p, colour, 2, cv2.LINE_AA)
                cv2.circle(img, p, 3, colour, -1, cv2.LINE_AA)
                prev = p
        cv2.rectangle(img, (legend_x, y0 + 8), (legend_x + 14, y0 + 18), colour, -1)
        _text(img, s.label, (legend_x + 18, y0 + 18), 0.42)
        legend_x += 18 + 9 * len(s.label) + 16
    return img


def save(panels: list[Panel], path: str | Path) -> Path:
    """Draw ``panels`` one under another and write a PNG."""
    path = Path(path)
    image = np.vstack([_draw_panel(p) for p in panels])
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")
    return path
