"""The label overlay: a QImage that shares memory with a numpy BGRA buffer.

A stroke recolours only its changed box through a lookup table and repaints only that rectangle,
so painting cost does not grow with the image size (the complaint about slow painting on large
images in other tools).

A label of more than display.LARGE_PIXELS keeps no colour buffer (it would take 4 bytes a pixel:
1.6 GB for a 20,000 px image): each paint colours the exposed part only, sampled at the step of the
zoom (segdesk.core.sampling), so a repaint costs about as many pixels as the screen has.
"""

from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from segdesk.core import encoding, sampling
from segdesk.core.display import LARGE_PIXELS
from segdesk.core.history import Box
from segdesk.qt.sampled_paint import SampledView, to_qimage

BACKGROUND_RGB = (70, 90, 140)
BACKGROUND_ALPHA = 110
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


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
    """True where a pixel differs from one of its 4-neighbours (edge pixels of each region): where
    the largest value of its 3 x 3 cross differs from the smallest (outside the array counts as
    the pixel itself). OpenCV's min/max filters take a few passes where four numpy shifts take eight."""
    region = np.ascontiguousarray(region.view(np.uint8) if region.dtype == bool else region)
    if region.dtype not in (np.uint8, np.uint16, np.int16, np.float32):  # not OpenCV's: four shifts
        edge = np.zeros(region.shape, bool)
        edge[1:, :] |= region[1:, :] != region[:-1, :]
        edge[:-1, :] |= region[:-1, :] != region[1:, :]
        edge[:, 1:] |= region[:, 1:] != region[:, :-1]
        edge[:, :-1] |= region[:, :-1] != region[:, 1:]
        return edge
    high = cv2.dilate(region, _CROSS, borderType=cv2.BORDER_REPLICATE)
    low = cv2.erode(region, _CROSS, borderType=cv2.BORDER_REPLICATE)
    return high != low


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


def dashes(y0: int, x0: int, y1: int, x1: int, period: int, step: int = 1) -> np.ndarray:
    """A checkerboard of ``period``-pixel squares over the box (every ``step``-th pixel): an edge
    drawn through it is dashed whichever way it runs. Fixed to image coordinates, so refreshed
    boxes line up; zoomed out (``step`` > 1) the squares grow with the step, to stay visible."""
    yy = np.arange(y0, y1, step)[:, None] // (period * step)
    xx = np.arange(x0, x1, step)[None, :] // (period * step)
    return (yy + xx) % 2 == 0


def _gather(lut: np.ndarray, values: np.ndarray) -> np.ndarray:
    """lut[values] for an N x 4 uint8 table, gathering one 4-byte word a pixel (faster than rows)."""
    words = np.ascontiguousarray(lut).view(np.uint32).reshape(-1)
    return words[values].view(np.uint8).reshape(*values.shape, 4)


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
        self._both: np.ndarray | None = None
        self._under: np.ndarray | None = None  # a label drawn over this one (``hide_under``)
        h, w = label.shape
        # None: a large label, coloured as it is painted
        self._bgra: np.ndarray | None = None
        self._view: SampledView | None = None
        if h * w > LARGE_PIXELS:
            self._view = SampledView((h, w), self._colour)
        else:
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

    def hide_under(self, label: np.ndarray) -> None:
        """Draw nothing where ``label`` (the user's, drawn over this one: a live array, recoloured by
        ``refresh`` as it changes) says something: a proposal shows only where the user has not
        answered yet, so what a brush stroke or a click changed is not contradicted underneath."""
        if label.shape != self._label.shape:
            raise ValueError("the label over a proposal must have its shape")
        self._under = label
        if self._view is not None:  # large: only what is on screen is coloured, as it is painted (no
            self.refresh(None)  # whole-label scan for the labelled box: 80 ms at 20,000 px)
            return
        rows, cols = np.flatnonzero(label.any(axis=1)), np.flatnonzero(label.any(axis=0))
        if len(rows):
            self.refresh((int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1))

    def prime(self, step: int) -> None:
        """A large label: colour the whole level at ``step`` now (e.g. on the reader's thread, before
        the item is shown), so the first paint fitted to the window is a slice. Small: nothing to do."""
        if self._view is not None:
            self._view.prime(step)

    def _colour(self, y0: int, x0: int, y1: int, x1: int, step: int = 1) -> np.ndarray:
        """Premultiplied BGRA (H x W x 4 uint8) of rows y0:y1:step and columns x0:x1:step of the label,
        transparent where the label over it says something (``hide_under``)."""
        out = self._colour_label(y0, x0, y1, x1, step)
        if self._under is not None:
            out[self._under[y0:y1:step, x0:x1:step] != 0] = 0
        return out

    def _colour_label(self, y0: int, x0: int, y1: int, x1: int, step: int = 1) -> np.ndarray:
        if not (self._outline or self._edge_lut is not None):
            return _gather(self._lut, self._label[y0:y1:step, x0:x1:step])
        # an edge depends on the samples just outside the box: read them with it, once
        h, w = self._label.shape
        rows, cols = sampling.samples(y0, y1, step), sampling.samples(x0, x1, step)
        gy0, gx0 = (y0 - step if y0 >= step else y0), (x0 - step if x0 >= step else x0)
        grid = np.ascontiguousarray(
            self._label[gy0:min(h, y0 + rows * step + 1):step, gx0:min(w, x0 + cols * step + 1):step])
        oy, ox = (y0 - gy0) // step, (x0 - gx0) // step
        region = grid[oy:oy + rows, ox:ox + cols]
        edge = outline_of(grid)[oy:oy + rows, ox:ox + cols]
        if self._dash and not self._outline:
            edge &= dashes(y0, x0, y1, x1, self._dash, step)
        if self._outline:
            return _gather(self._lut, region * edge)  # 0 (transparent) off the edges
        if self._both is None:  # values 0..255: fill colours; 256..511: edge colours
            self._both = np.concatenate([self._lut, self._edge_lut])
        index = edge.astype(np.uint16)
        index <<= 8
        index += region
        return _gather(self._both, index)

    def refresh(self, box: Box | None) -> None:
        """Recolour ``box`` (y0, x0, y1, x1) of the overlay from the label, or all of it."""
        h, w = self._label.shape
        y0, x0, y1, x1 = box if box is not None else (0, 0, h, w)
        if self._outline or self._edge_lut is not None:
            # a change moves the edges of its neighbours just outside the box too
            y0, x0, y1, x1 = max(0, y0 - 1), max(0, x0 - 1), min(h, y1 + 1), min(w, x1 + 1)
        if self._bgra is not None:
            self._bgra[y0:y1, x0:x1] = self._colour(y0, x0, y1, x1)
        elif self._view is not None:
            self._view.invalidate(None if box is None else (y0, x0, y1, x1))
        self.update(QRectF(x0, y0, x1 - x0, y1 - y0))

    def boundingRect(self) -> QRectF:
        h, w = self._label.shape
        return QRectF(0, 0, w, h)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None):
        if self._view is not None:
            self._view.paint(painter, option, self.boundingRect())
            return
        exposed = option.exposedRect.intersected(self.boundingRect()).toAlignedRect()
        if exposed.isEmpty():
            return
        painter.drawImage(exposed, self._qimage, exposed)

    def pixel_colour(self, x: int, y: int) -> QColor:
        """The drawn colour at (x, y) at actual size, for tests."""
        if self._bgra is None:
            pixel = np.ascontiguousarray(self._colour(y, x, y + 1, x + 1))
            return QColor.fromRgba(to_qimage(pixel).pixel(0, 0))
        return QColor.fromRgba(self._qimage.pixel(x, y))
