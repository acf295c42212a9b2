"""The label overlay: a QImage that shares memory with a numpy BGRA buffer.

A stroke recolours only its changed box through a lookup table and repaints only that rectangle,
so painting cost does not grow with the image size (the complaint about slow painting on large
images in other tools).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from segdesk.core import encoding
from segdesk.core.history import Box

BACKGROUND_RGB = (70, 90, 140)
BACKGROUND_ALPHA = 110


def colour_table(class_rgbs: list[tuple[int, int, int]]) -> np.ndarray:
    """256 x 4 premultiplied BGRA colours for label values (0 = transparent, 1 = background)."""
    lut = np.zeros((256, 4), np.uint8)

    def put(value: int, rgb: tuple[int, int, int], alpha: int) -> None:
        r, g, b = (c * alpha // 255 for c in rgb)
        lut[value] = (b, g, r, alpha)

    put(encoding.BACKGROUND, BACKGROUND_RGB, BACKGROUND_ALPHA)
    for i, rgb in enumerate(class_rgbs):
        put(encoding.class_value(i), rgb, 255)
    return lut


def outline_of(region: np.ndarray) -> np.ndarray:
    """True where a pixel differs from one of its 4-neighbours (edge pixels of each region)."""
    edge = np.zeros(region.shape, bool)
    edge[1:, :] |= region[1:, :] != region[:-1, :]
    edge[:-1, :] |= region[:-1, :] != region[1:, :]
    edge[:, 1:] |= region[:, 1:] != region[:, :-1]
    edge[:, :-1] |= region[:, :-1] != region[:, 1:]
    return edge


def proposal_tables(class_rgbs: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(fill, edge) colours for a proposal: a faint tint with a bright edge, background unshown,
    so a proposal never looks like a label the user has painted."""
    fill = np.zeros((256, 4), np.uint8)
    edge = np.zeros((256, 4), np.uint8)
    for i, rgb in enumerate(class_rgbs):
        for table, alpha in ((fill, 70), (edge, 255)):
            r, g, b = (c * alpha // 255 for c in rgb)
            table[encoding.class_value(i)] = (b, g, r, alpha)
    return fill, edge


LEARNING_DASH = 4  # pixels on, pixels off: the outline of a proposal shown on request
LEARNING_EDGE_ALPHA = 200  # dimmer than a proposal's edge (255)


def learning_proposal_tables(class_rgbs: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(fill, edge) colours for the proposal of a model still learning, shown on request: no
    tint and a dimmer edge (drawn dashed, ``LEARNING_DASH``), so it reads as a tentative sketch,
    not as a proposal the model stands behind."""
    fill = np.zeros((256, 4), np.uint8)
    edge = np.zeros((256, 4), np.uint8)
    alpha = LEARNING_EDGE_ALPHA
    for i, rgb in enumerate(class_rgbs):
        r, g, b = (c * alpha // 255 for c in rgb)
        edge[encoding.class_value(i)] = (b, g, r, alpha)
    return fill, edge


def dashes(y0: int, x0: int, y1: int, x1: int, period: int) -> np.ndarray:
    """A checkerboard of ``period``-pixel squares over the box: an edge drawn through it is
    dashed whichever way it runs. Fixed to image coordinates, so refreshed boxes line up."""
    yy = np.arange(y0, y1)[:, None] // period
    xx = np.arange(x0, x1)[None, :] // period
    return (yy + xx) % 2 == 0


class LabelOverlayItem(QGraphicsItem):
    """Draws a label map over the image; ``refresh(box)`` recolours one box only."""

    def __init__(self, label: np.ndarray, lut: np.ndarray, edge_lut: np.ndarray | None = None, dash: int = 0):
        """``edge_lut``, when given, colours region edges differently (how a proposal shows);
        ``dash`` > 0 draws those edges dashed with that period (a proposal shown on request)."""
        super().__init__()
        self._label = label
        self._lut = lut
        self._edge_lut = edge_lut
        self._dash = dash
        self._outline = False
        h, w = label.shape
        self._bgra = np.zeros((h, w, 4), np.uint8)
        self._qimage = QImage(self._bgra.data, w, h, 4 * w, QImage.Format.Format_ARGB32_Premultiplied)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.refresh(None)

    @property
    def outline(self) -> bool:
        return self._outline

    def set_outline(self, on: bool) -> None:
        self._outline = on
        self.refresh(None)

    def set_label(self, label: np.ndarray) -> None:
        if label.shape != self._label.shape:
            raise ValueError("overlay label shape must not change; make a new overlay")
        self._label = label
        self.refresh(None)

    def refresh(self, box: Box | None) -> None:
        """Recolour ``box`` (y0, x0, y1, x1) of the overlay from the label, or all of it."""
        h, w = self._label.shape
        y0, x0, y1, x1 = box if box is not None else (0, 0, h, w)
        region = self._label[y0:y1, x0:x1]
        if self._outline or self._edge_lut is not None:
            # an edge depends on the neighbours just outside the box, and changes them too
            y0, x0, y1, x1 = max(0, y0 - 1), max(0, x0 - 1), min(h, y1 + 1), min(w, x1 + 1)
            gy0, gx0, gy1, gx1 = max(0, y0 - 1), max(0, x0 - 1), min(h, y1 + 1), min(w, x1 + 1)
            edge = outline_of(self._label[gy0:gy1, gx0:gx1])[y0 - gy0:y1 - gy0, x0 - gx0:x1 - gx0]
            region = self._label[y0:y1, x0:x1]
            if self._dash and not self._outline:
                edge &= dashes(y0, x0, y1, x1, self._dash)
            if self._outline:
                self._bgra[y0:y1, x0:x1] = self._lut[np.where(edge, region, 0)]
            else:
                self._bgra[y0:y1, x0:x1] = np.where(edge[..., None], self._edge_lut[region], self._lut[region])
        else:
            self._bgra[y0:y1, x0:x1] = self._lut[region]
        self.update(QRectF(x0, y0, x1 - x0, y1 - y0))

    def boundingRect(self) -> QRectF:
        h, w = self._label.shape
        return QRectF(0, 0, w, h)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None):
        exposed = option.exposedRect.intersected(self.boundingRect()).toAlignedRect()
        if exposed.isEmpty():
            return
        painter.drawImage(exposed, self._qimage, exposed)

    def pixel_colour(self, x: int, y: int) -> QColor:
        """The drawn colour at (x, y), for tests."""
        return QColor.fromRgba(self._qimage.pixel(x, y))
