"""Drawing the exposed part of a large image or label, sampled at the step of the zoom.

Shared by the canvas's LargeImageItem and the label overlay: the item says how to compute the
pixels of rows y0:y1:k and columns x0:x1:k; this picks k from the painter's scale (segdesk.core.
sampling), computes them for the exposed box only and draws them scaled back over it.
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


def to_qimage(pixels: np.ndarray) -> QImage:
    """A QImage over C-contiguous uint8 pixels: H x W gray, H x W x 3 RGB or H x W x 4 premultiplied
    BGRA. It shares their memory: keep them alive while it is used."""
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return QImage(pixels.data, w, h, pixels.strides[0], _FORMATS[channels])


def paint_sampled(painter: QPainter, option: QStyleOptionGraphicsItem, bounds: QRectF, shape: tuple[int, int],
                  make: Callable[[int, int, int, int, int], np.ndarray]) -> None:
    """Draw the exposed part of an item of ``shape`` (H, W): ``make(y0, x0, y1, x1, k)`` gives the
    pixels of rows y0:y1:k and columns x0:x1:k (see ``to_qimage``), drawn scaled back over them."""
    exposed = option.exposedRect.intersected(bounds)
    if exposed.isEmpty():
        return
    step = sampling.step_for(QStyleOptionGraphicsItem.levelOfDetailFromTransform(painter.worldTransform()))
    box = sampling.snap(exposed.top(), exposed.left(), exposed.bottom(), exposed.right(), step, shape)
    if box is None:
        return
    y0, x0, y1, x1 = box
    pixels = np.ascontiguousarray(make(y0, x0, y1, x1, step))
    image = to_qimage(pixels)
    target = QRectF(x0, y0, image.width() * step, image.height() * step)
    if step > 1:  # the last sample stands for up to k pixels: never draw past the item
        painter.save()
        painter.setClipRect(bounds, Qt.ClipOperation.IntersectClip)
    painter.drawImage(target, image)
    if step > 1:
        painter.restore()
