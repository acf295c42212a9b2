"""Drawing the exposed part of a large image or label, sampled at the step of the zoom.

Shared by the canvas's LargeImageItem and the label overlay: the item says how to compute the
pixels of rows y0:y1:k and columns x0:x1:k; ``SampledView`` picks k from the painter's scale
(segdesk.core.sampling), computes the exposed box and draws it scaled back over it.

It keeps what it computed for the last whole view, with a margin (``CACHE_MARGIN`` of the view
on each side), or the whole image when that is as small (``WHOLE_SAMPLES``): a repaint inside it,
a pan by a few pixels or a zoom in within the same step, is a slice. A label edit recomputes only
the part of it that changed (``invalidate(box)``). Zoomed out this is a downsampled level of the
image, built on first use.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QStyleOptionGraphicsItem

from segdesk.core import sampling

_FORMATS = {1: QImage.Format.Format_Grayscale8, 3: QImage.Format.Format_RGB888,
            4: QImage.Format.Format_ARGB32_Premultiplied}
CACHE_MARGIN = 0.1  # of the view's size, on each side of a cached view
WHOLE_SAMPLES = 4 * 2**20  # a whole level of at most this many samples is cached whole

Make = Callable[[int, int, int, int, int], np.ndarray]


def to_qimage(pixels: np.ndarray) -> QImage:
    """A QImage over C-contiguous uint8 pixels: H x W gray, H x W x 3 RGB or H x W x 4 premultiplied
    BGRA. It shares their memory: keep them alive while it is used."""
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return QImage(pixels.data, w, h, pixels.strides[0], _FORMATS[channels])


class SampledView:
    """Paints an item of ``shape`` (H, W) whose pixels ``make(y0, x0, y1, x1, k)`` computes for rows
    y0:y1:k and columns x0:x1:k (see ``to_qimage`` for what it may return)."""

    def __init__(self, shape: tuple[int, int], make: Make):
        self.shape = (int(shape[0]), int(shape[1]))
        self._make = make
        self._step = 0
        self._box: sampling.Box | None = None
        self._pixels: np.ndarray | None = None

    def level(self, step: int) -> np.ndarray | None:
        """The whole image at ``step`` as the view keeps it, when that is small enough to keep
        (``WHOLE_SAMPLES``); None otherwise. Any thread: the item need not be in a scene."""
        h, w = self.shape
        if step < 1 or sampling.samples(0, h, step) * sampling.samples(0, w, step) > WHOLE_SAMPLES:
            return None
        return np.ascontiguousarray(self._make(0, 0, h, w, step))

    def adopt(self, step: int, pixels: np.ndarray | None) -> None:
        """Keep ``pixels`` (``level(step)``, computed elsewhere) as the whole level at ``step``, so
        that the first paint at that zoom is a slice. Ignored when None or not of that level's size."""
        h, w = self.shape
        if pixels is not None and pixels.shape[:2] == (sampling.samples(0, h, step), sampling.samples(0, w, step)):
            self._pixels, self._box, self._step = pixels, (0, 0, h, w), step

    def prime(self, step: int) -> None:
        """Compute and keep the whole level at ``step`` now (e.g. on a reader thread, before the item
        is shown), so the first paint at that zoom does not compute it on the GUI thread."""
        self.adopt(step, self.level(step))

    def invalidate(self, box: sampling.Box | None = None) -> None:
        """The pixels of ``box`` (y0, x0, y1, x1; None: all) changed: recompute what is kept of it."""
        if self._pixels is None or self._box is None:
            return
        if box is None:
            self._pixels, self._box = None, None
            return
        step, (cy0, cx0, cy1, cx1) = self._step, self._box
        y0, x0 = max(box[0] - step, cy0), max(box[1] - step, cx0)  # an edge reaches one sample out
        y1, x1 = min(box[2] + step, cy1), min(box[3] + step, cx1)
        if y1 <= y0 or x1 <= x0:
            return
        r0, c0 = (y0 - cy0) // step, (x0 - cx0) // step  # the cached samples the change touches
        r1, c1 = sampling.samples(cy0, y1, step), sampling.samples(cx0, x1, step)
        self._pixels[r0:r1, c0:c1] = self._make(cy0 + r0 * step, cx0 + c0 * step,
                                                min(cy1, cy0 + r1 * step), min(cx1, cx0 + c1 * step), step)

    def _pixels_for(self, box: sampling.Box, step: int, view_samples: int) -> np.ndarray:
        y0, x0, y1, x1 = box
        rows, cols = sampling.samples(y0, y1, step), sampling.samples(x0, x1, step)
        kept = self._box
        if self._pixels is not None and kept is not None and self._step == step \
                and kept[0] <= y0 and kept[1] <= x0 and kept[2] >= y1 and kept[3] >= x1:
            r0, c0 = (y0 - kept[0]) // step, (x0 - kept[1]) // step
            return self._pixels[r0:r0 + rows, c0:c0 + cols]
        if rows * cols < view_samples // 2:  # a strip (pan, a stroke): computed, the kept view stays
            return self._make(y0, x0, y1, x1, step)
        h, w = self.shape
        if sampling.samples(0, h, step) * sampling.samples(0, w, step) <= WHOLE_SAMPLES:
            wide = (0, 0, h, w)
        else:
            dy, dx = int((y1 - y0) * CACHE_MARGIN), int((x1 - x0) * CACHE_MARGIN)
            wide = sampling.snap(y0 - dy, x0 - dx, y1 + dy, x1 + dx, step, self.shape)
        self._pixels = np.ascontiguousarray(self._make(*wide, step))
        self._box, self._step = wide, step
        return self._pixels_for(box, step, view_samples)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, bounds: QRectF) -> None:
        exposed = option.exposedRect.intersected(bounds)
        if exposed.isEmpty():
            return
        scale = QStyleOptionGraphicsItem.levelOfDetailFromTransform(painter.worldTransform())
        step = sampling.step_for(scale)
        box = sampling.snap(exposed.top(), exposed.left(), exposed.bottom(), exposed.right(), step, self.shape)
        if box is None:
            return
        # the samples a whole view holds at this step: what the device shows, in samples
        device = painter.device()
        view_samples = int(device.width() * device.height() / max(scale * step, 1e-9) ** 2) if device else 0
        pixels = np.ascontiguousarray(self._pixels_for(box, step, view_samples))
        image = to_qimage(pixels)
        y0, x0 = box[0], box[1]
        target = QRectF(x0, y0, image.width() * step, image.height() * step)
        if step > 1:  # the last sample stands for up to k pixels: never draw past the item
            painter.save()
            painter.setClipRect(bounds, Qt.ClipOperation.IntersectClip)
        painter.drawImage(target, image)
        if step > 1:
            painter.restore()
