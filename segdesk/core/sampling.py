"""Which pixels of a large image the screen needs: a box at every k-th row and column.

Drawing a 20,000 px image zoomed out, the screen shows at most one pixel in k: sampling the
exposed box at that step gives what Qt's nearest-neighbour scaling would show, for about as many
pixels as the screen has, whatever the image size. Steps are powers of two and boxes start on
multiples of the step, so boxes painted apart (pan, a brush stroke) sample the same grid.
"""

from __future__ import annotations

import math

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), half-open, image pixels


def step_for(scale: float) -> int:
    """The largest power of two k with k <= 1 / ``scale`` (screen pixels per image pixel): every
    sample still gets at least one screen pixel. 1 at actual size and zoomed in."""
    if not scale > 0 or scale >= 1 or not math.isfinite(scale):
        return 1
    return 1 << max(0, int(math.floor(math.log2(1.0 / scale) + 1e-9)))


def snap(y0: float, x0: float, y1: float, x1: float, step: int, shape: tuple[int, int]) -> Box | None:
    """The box covering (y0, x0)-(y1, x1), its start on multiples of ``step``, clipped to an array of
    ``shape`` (height, width); None when nothing of it is inside."""
    h, w = shape[:2]
    top, left = max(0, int(math.floor(y0 / step)) * step), max(0, int(math.floor(x0 / step)) * step)
    bottom, right = min(h, int(math.ceil(y1))), min(w, int(math.ceil(x1)))
    if bottom <= top or right <= left:
        return None
    return top, left, bottom, right


def samples(start: int, stop: int, step: int) -> int:
    """How many samples ``range(start, stop, step)`` holds."""
    return max(0, -(-(stop - start) // step))
