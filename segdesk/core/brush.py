"""Rasterisation helpers for the paint tools. Pure functions, no state.

Coordinates: a point is ``(x, y)`` = (column, row), and integer coordinates are pixel centres, so
pixel ``label[r, c]`` is centred at ``(c, r)``. Float points are rounded to the nearest pixel centre
before drawing, so a brush has the same shape wherever the cursor sits inside a pixel. (Qt scene
coordinates, where pixel ``c`` spans ``[c, c + 1)``, map here as ``x_scene - 0.5``.)

Every helper returns ``(box, mask)``: the bounding box ``(y0, x0, y1, x1)`` (half-open) of the drawn
pixels and a bool mask of that box's shape, or ``None`` when nothing falls inside the image. Only
box-sized buffers are allocated, so painting cost does not grow with the image size (flood fill
excepted: it must see the whole image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from segdesk.core.history import Box

Point = tuple[float, float]


def to_pixel(v: float) -> int:
    """Index of the pixel whose centre is nearest to coordinate ``v``."""
    if not math.isfinite(v):
        raise ValueError(f"coordinate must be finite, got {v}")
    return math.floor(v + 0.5)


def _clip_box(y0: int, x0: int, y1: int, x1: int, shape: tuple[int, int]) -> Box | None:
    h, w = shape[:2]
    y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if y0 >= y1 or x0 >= x1:
        return None
    return (y0, x0, y1, x1)


def _trim(box: Box, mask: np.ndarray) -> tuple[Box, np.ndarray] | None:
    """Shrink box and mask to the mask's bounding box; ``None`` if the mask is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if (r0, c0, r1, c1) == (0, 0) + mask.shape:
        return box, mask
    y0, x0 = box[0], box[1]
    return (y0 + r0, x0 + c0, y0 + r1, x0 + c1), mask[r0:r1, c0:c1]


def segment_mask(
    p0: Point, p1: Point, radius: float, shape: tuple[int, int]
) -> tuple[Box, np.ndarray] | None:
    """Pixels within ``radius`` of the segment p0-p1: a round brush swept along it, round caps.

    A pixel is painted when its centre lies within ``radius`` of the segment (after rounding the end
    points), so ``p0 == p1`` gives a disk: radius 0.5 is one pixel, radius 1 a plus, radius 3 has
    29 pixels. Computed exactly on the box rather than with ``cv2.line(thickness=...)``, whose thick
    diagonal lines come out up to ~2 px wider than the disk.
    """
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"radius must be a positive finite number, got {radius}")
    ax, ay = to_pixel(p0[0]), to_pixel(p0[1])
    bx, by = to_pixel(p1[0]), to_pixel(p1[1])
    ir = math.floor(radius)
    box = _clip_box(
        min(ay, by) - ir, min(ax, bx) - ir, max(ay, by) + ir + 1, max(ax, bx) + ir + 1, shape
    )
    if box is None:
        return None
    y0, x0, y1, x1 = box
    # Coordinates relative to p0, as a column (rows) and a row (columns): broadcasting keeps
    # every temporary box-sized.
    ys = np.arange(y0 - ay, y1 - ay, dtype=np.float32)[:, None]
    xs = np.arange(x0 - ax, x1 - ax, dtype=np.float32)[None, :]
    dx, dy = float(bx - ax), float(by - ay)
    length2 = dx * dx + dy * dy
    r2 = radius * radius
    if length2 == 0:
        mask = xs * xs + ys * ys <= r2
    else:
        t = xs * np.float32(dx / length2) + ys * np.float32(dy / length2)
        np.clip(t, 0.0, 1.0, out=t)
        ex = xs - t * np.float32(dx)
        ey = ys - t * np.float32(dy)
        mask = ex * ex + ey * ey <= r2
    return _trim(box, mask)


def fill_mask(label: np.ndarray, x: int, y: int) -> tuple[Box, np.ndarray] | None:
    """The 4-connected region holding the value at ``(x, y)``, cropped to its bounding box."""
    h, w = label.shape[:2]
    x, y = to_pixel(x), to_pixel(y)
    if not (0 <= x < w and 0 <= y < h):
        return None
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"label must be a 2D uint8 array, got {label.dtype} {label.shape}")
    src = np.ascontiguousarray(label)
    flood = np.zeros((h + 2, w + 2), np.uint8)  # OpenCV wants a 1-pixel border around the mask
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    _, _, _, (rx, ry, rw, rh) = cv2.floodFill(src, flood, (x, y), 0, 0, 0, flags)
    crop = flood[1 + ry : 1 + ry + rh, 1 + rx : 1 + rx + rw]
    # The buffer holds only 0 and 1, so it can be read as bool without a pass over it. Copy small
    # regions so the undo history does not keep the whole image-sized buffer alive.
    mask = crop.view(bool) if 2 * crop.size >= flood.size else crop.astype(bool)
    return (ry, rx, ry + rh, rx + rw), mask


def polygon_mask(
    points: Sequence[Point], shape: tuple[int, int]
) -> tuple[Box, np.ndarray] | None:
    """Filled polygon (outline included) clipped to the image; needs at least 3 points."""
    if len(points) < 3:
        return None
    pts = np.array([(to_pixel(px), to_pixel(py)) for px, py in points], dtype=np.int64)
    lo = pts.min(axis=0)
    hi = pts.max(axis=0)
    box = _clip_box(int(lo[1]), int(lo[0]), int(hi[1]) + 1, int(hi[0]) + 1, shape)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    buf = np.zeros((y1 - y0, x1 - x0), np.uint8)
    local = (pts - np.array([x0, y0])).astype(np.int32)
    cv2.fillPoly(buf, [local.reshape(-1, 1, 2)], 1, cv2.LINE_8)
    return _trim(box, buf.astype(bool))
