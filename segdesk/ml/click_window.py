"""Where a click is answered: a window around the clicks at working scale, so a click on a large
image costs one small forward pass (``segdesk.ml.inference.Predictor.refine``). numpy and OpenCV."""

from __future__ import annotations

import cv2
import numpy as np

CLICK_WINDOW_MIN = 256  # working pixels: the side of the window a click is answered on, at least...
CLICK_WINDOW_MAX = 384  # ...and at most (one forward pass of ~0.1 s on a laptop core)
_CLICK_MARGIN = 32  # working pixels of context around the clicks and the objects they touch
_CLICK_REACH = 8  # working pixels: an object this close to a click is the one it corrects
CLICK_REGION = CLICK_WINDOW_MAX + _CLICK_MARGIN  # working pixels around the clicks click_window looks at


def click_window(shape: tuple[int, int], points: list[tuple[int, int]], previous: np.ndarray | None,
                 classes: list[int]) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) at working resolution: the clicks' bounding box, grown to hold the previous
    mask's objects (of the clicked classes) within _CLICK_REACH of a click, plus a margin; at least
    CLICK_WINDOW_MIN and at most CLICK_WINDOW_MAX a side (centred on the last click when the objects
    are larger), within the image."""
    h, w = shape
    ys = [p[0] for p in points]
    xs = [p[1] for p in points]
    y0, y1, x0, x1 = min(ys), max(ys) + 1, min(xs), max(xs) + 1
    if previous is not None:
        for c in sorted(set(classes)):
            n, comps, stats, _ = cv2.connectedComponentsWithStats((previous == c).astype(np.uint8), connectivity=8)
            if n <= 1:
                continue
            for (py, px), pc in zip(points, classes):
                if pc != c:
                    continue
                near = comps[max(0, py - _CLICK_REACH) : py + _CLICK_REACH + 1,
                             max(0, px - _CLICK_REACH) : px + _CLICK_REACH + 1]
                for k in np.unique(near[near > 0]):
                    left, top, width, height = stats[k, :4]
                    y0, y1 = min(y0, top), max(y1, top + height)
                    x0, x1 = min(x0, left), max(x1, left + width)
    y0, x0, y1, x1 = y0 - _CLICK_MARGIN, x0 - _CLICK_MARGIN, y1 + _CLICK_MARGIN, x1 + _CLICK_MARGIN

    def side(lo: int, hi: int, length: int, centre: int) -> tuple[int, int]:
        size = min(length, max(CLICK_WINDOW_MIN, hi - lo))
        if size > CLICK_WINDOW_MAX:
            size = CLICK_WINDOW_MAX
            lo = centre - size // 2
        elif hi - lo < size:
            lo -= (size - (hi - lo)) // 2
        lo = int(min(max(lo, 0), length - size))
        return lo, lo + size

    y0, y1 = side(y0, y1, h, points[-1][0])
    x0, x1 = side(x0, x1, w, points[-1][1])
    return y0, x0, y1, x1
