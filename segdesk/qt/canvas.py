"""The canvas: an image with its label overlay; zoom to cursor, pan, fit; mouse in image pixels.

Scene units are image pixels. An image up to display.LARGE_PIXELS is one QPixmap; a larger one
(or a LazyDisplay) is a LargeImageItem that draws only the exposed part, sampled at the step the
zoom allows (segdesk.core.sampling): no screen copy of a 20,000 px image, and zoomed out it draws
about as many pixels as the screen has.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QImage, QMouseEvent, QPainter, QPainterPath, QPen, QPixmap, QWheelEvent
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from segdesk.core import sampling
from segdesk.core.display import LARGE_PIXELS
from segdesk.qt.overlay import LabelOverlayItem
from segdesk.qt.sampled_paint import SampledView, to_qimage

ZOOM_STEP = 1.25
MIN_ZOOM, MAX_ZOOM = 0.01, 64.0


def rgb_to_pixmap(rgb: np.ndarray) -> QPixmap:
    return QPixmap.fromImage(to_qimage(np.ascontiguousarray(rgb)))  # copies, so ``rgb`` may be freed


def is_large(rgb) -> bool:
    """Drawn by a LargeImageItem: a LazyDisplay, or an array of more than LARGE_PIXELS."""
    return not isinstance(rgb, np.ndarray) or rgb.shape[0] * rgb.shape[1] > LARGE_PIXELS


def _sample(source, y0: int, x0: int, y1: int, x1: int, k: int) -> np.ndarray:
    """Rows y0:y1:k and columns x0:x1:k of a display (array or LazyDisplay): what a LargeImageItem draws."""
    return source[y0:y1:k, x0:x1:k]


class LargeImageItem(QGraphicsItem):
    """Draws the exposed part of a large image (an array or a LazyDisplay: anything indexable as
    ``source[y0:y1:k, x0:x1:k]`` giving uint8 gray or RGB), sampled at the step of the zoom."""

    def __init__(self, source, level: tuple[int, np.ndarray | None] | None = None):
        """``level``: (step, ``level_of(source, step)``) computed before, e.g. on the image reader's
        thread: the first paint at that zoom (fitting the image) then computes nothing."""
        super().__init__()
        self._source = source
        self._view = SampledView(source.shape[:2], lambda *box: _sample(self._source, *box))
        if level is not None:
            self._view.adopt(*level)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    @staticmethod
    def level_of(source, step: int) -> np.ndarray | None:
        """What the item keeps of ``source`` at ``step`` when zoomed out that far (None: too large)."""
        return SampledView(source.shape[:2], lambda *box: _sample(source, *box)).level(step)

    def set_source(self, source) -> None:
        if tuple(source.shape[:2]) != tuple(self._source.shape[:2]):
            raise ValueError("a new display must keep the image size; make a new item")
        self._source = source
        self._view.invalidate()
        self.update()

    def boundingRect(self) -> QRectF:
        h, w = self._source.shape[:2]
        return QRectF(0, 0, w, h)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        self._view.paint(painter, option, self.boundingRect())


class Canvas(QGraphicsView):
    """Shows one image. Emits mouse events in image pixel coordinates (floats)."""

    pressed = Signal(float, float, object)  # x, y, Qt.MouseButton
    moved = Signal(float, float)  # while a button is held
    released = Signal(float, float, object)
    double_clicked = Signal(float, float)
    hovered = Signal(float, float)  # any mouse move over the view
    zoom_changed = Signal(float)
    window_drag = Signal(float, float, bool)  # Shift + right drag: dx, dy (view px) since press, done

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)
        self.setBackgroundBrush(QBrush(QColor(32, 32, 36)))
        # No scroll bars: the scene reaches beyond the image (panning past its edges), so they would
        # appear after a fit, shrink the viewport and leave the fitted image cut and off-centre.
        # Panning is the middle button or Ctrl+drag; F fits.
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMouseTracking(True)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        self._image_item: QGraphicsPixmapItem | LargeImageItem | None = None
        self._overlay: LabelOverlayItem | None = None
        self._proposal: LabelOverlayItem | None = None
        self._cursor = QGraphicsEllipseItem()
        self._cursor.setPen(QPen(QColor(255, 255, 255, 200), 0))
        self._cursor.setZValue(10)
        self._cursor.setVisible(False)
        self.scene().addItem(self._cursor)
        self._path = QGraphicsPathItem()
        self._path.setPen(QPen(QColor(255, 220, 0), 0))
        self._path.setZValue(11)
        self.scene().addItem(self._path)
        self._pan_from: QPointF | None = None
        self._fitted = False
        self._window_from: QPointF | None = None
        self._brush_radius = 5.0
        self._cursor_visible = True

    # ----- content

    def fit_step(self, shape: tuple[int, int]) -> int:
        """The sampling step (segdesk.core.sampling) an image of ``shape`` is drawn at when fitted."""
        h, w = int(shape[0]), int(shape[1])
        size = self.viewport().size()
        return sampling.step_for(min(size.width() / max(w, 1), size.height() / max(h, 1)))

    def set_image(self, rgb, level: tuple[int, np.ndarray | None] | None = None) -> None:
        """Show an image: uint8 H x W x 3 RGB or H x W gray, or a LazyDisplay (display.render).
        ``level``: for a large image, (step, ``LargeImageItem.level_of``) made off this thread."""
        if self._image_item is not None:
            self.scene().removeItem(self._image_item)
            self._image_item = None
        if rgb is None:
            return
        self._image_item = LargeImageItem(rgb, level) if is_large(rgb) else QGraphicsPixmapItem(rgb_to_pixmap(rgb))
        self._image_item.setZValue(0)
        self.scene().addItem(self._image_item)
        h, w = rgb.shape[:2]
        self.scene().setSceneRect(QRectF(-w * 0.25, -h * 0.25, w * 1.5, h * 1.5))

    def update_image(self, rgb) -> None:
        """Replace the displayed pixels (a new display window) without touching the view."""
        if isinstance(self._image_item, LargeImageItem):
            self._image_item.set_source(rgb)
        elif self._image_item is not None:
            self._image_item.setPixmap(rgb_to_pixmap(rgb))

    def set_overlay(self, overlay: LabelOverlayItem | None) -> None:
        if self._overlay is not None:
            self.scene().removeItem(self._overlay)
        self._overlay = overlay
        if overlay is not None:
            overlay.setZValue(1)
            self.scene().addItem(overlay)

    def set_proposal(self, item: LabelOverlayItem | None) -> None:
        """The proposal layer, drawn under the user's label so corrections stay on top."""
        if self._proposal is not None:
            self.scene().removeItem(self._proposal)
        self._proposal = item
        if item is not None:
            item.setZValue(0.5)
            self.scene().addItem(item)

    def set_overlay_opacity(self, opacity: float) -> None:
        if self._overlay is not None:
            self._overlay.setOpacity(opacity)

    def set_outline(self, on: bool) -> None:
        if self._overlay is not None:
            self._overlay.set_outline(on)

    def show_labels(self, on: bool) -> None:
        """Show or hide the user's label and the proposal together."""
        for item in (self._overlay, self._proposal):
            if item is not None:
                item.setVisible(on)

    @property
    def proposal(self) -> LabelOverlayItem | None:
        return self._proposal

    @property
    def overlay(self) -> LabelOverlayItem | None:
        return self._overlay

    def set_path(self, points: list[tuple[float, float]], hover: tuple[float, float] | None = None) -> None:
        path = QPainterPath()
        if points:
            path.moveTo(*points[0])
            for p in points[1:]:
                path.lineTo(*p)
            if hover is not None:
                path.lineTo(*hover)
        self._path.setPath(path)

    def set_brush_radius(self, radius: float, visible: bool = True) -> None:
        self._brush_radius = radius
        self._cursor_visible = visible
        self._cursor.setRect(QRectF(-radius, -radius, 2 * radius, 2 * radius))
        if not visible:
            self._cursor.setVisible(False)

    # ----- view

    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def fit(self) -> None:
        if self._image_item is not None:
            self.fitInView(self._image_item, Qt.AspectRatioMode.KeepAspectRatio)
            self._fitted = True
            self.zoom_changed.emit(self.zoom)

    def set_zoom(self, zoom: float) -> None:
        self._fitted = False
        zoom = min(MAX_ZOOM, max(MIN_ZOOM, zoom))
        self.scale(zoom / self.zoom, zoom / self.zoom)
        self.zoom_changed.emit(self.zoom)

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.set_zoom(self.zoom * ZOOM_STEP ** steps)  # AnchorUnderMouse keeps the cursor's pixel
        event.accept()

    # ----- mouse

    def _image_pos(self, event: QMouseEvent) -> QPointF:
        return self.mapToScene(event.position().toPoint())

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.MiddleButton or (
            event.button() == Qt.MouseButton.LeftButton
            and event.modifiers() & Qt.KeyboardModifier.ControlModifier
        ):
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            return
        if event.button() == Qt.MouseButton.RightButton and event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self._window_from = event.position()
            self.window_drag.emit(0.0, 0.0, False)
            return
        p = self._image_pos(event)
        self.pressed.emit(p.x(), p.y(), event.button())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - int(delta.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(delta.y()))
            return
        if self._window_from is not None:
            delta = event.position() - self._window_from
            self.window_drag.emit(delta.x(), delta.y(), False)
            return
        p = self._image_pos(event)
        self._cursor.setPos(p)
        self._cursor.setVisible(self._cursor_visible and self._image_item is not None)
        self.hovered.emit(p.x(), p.y())
        if event.buttons() & (Qt.MouseButton.LeftButton | Qt.MouseButton.RightButton):
            self.moved.emit(p.x(), p.y())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None:
            self._pan_from = None
            self.viewport().unsetCursor()
            return
        if self._window_from is not None:
            delta, self._window_from = event.position() - self._window_from, None
            self.window_drag.emit(delta.x(), delta.y(), True)
            return
        p = self._image_pos(event)
        self.released.emit(p.x(), p.y(), event.button())

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        p = self._image_pos(event)
        self.double_clicked.emit(p.x(), p.y())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fitted:  # a fitted image stays fitted while the window is resized
            self.fit()

    def leaveEvent(self, event) -> None:
        self._cursor.setVisible(False)
        super().leaveEvent(event)
