"""Markers at the Click tool's clicks: a small disc per click, drawn the same size at any zoom.

Positive clicks ("this is the class") are a green disc with a plus, negative ones ("this is not")
a red disc with a minus; each has a white ring inside a dark one, so it reads on dark and bright
images alike. Scene units are image pixels; pixel (y, x) has its centre at (x + 0.5, y + 0.5).
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem

MARKER_RADIUS = 7.0  # screen pixels
POSITIVE_RGB = (40, 200, 90)
NEGATIVE_RGB = (230, 50, 50)
MARKERS_Z = 12  # above the label, the proposal, the brush cursor and the polygon path


class ClickMarker(QGraphicsItem):
    """One click's marker; ignores the view's zoom so it stays small and clickable-looking."""

    def __init__(self, y: float, x: float, positive: bool, parent: QGraphicsItem | None = None):
        super().__init__(parent)
        self.positive = positive
        self.setPos(QPointF(x + 0.5, y + 0.5))
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)  # clicks go to the canvas, not here

    def boundingRect(self) -> QRectF:
        r = MARKER_RADIUS + 2
        return QRectF(-r, -r, 2 * r, 2 * r)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        r = MARKER_RADIUS
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(QColor(0, 0, 0, 200), 3.0))
        painter.setBrush(QBrush(QColor(*(POSITIVE_RGB if self.positive else NEGATIVE_RGB))))
        painter.drawEllipse(QPointF(0, 0), r, r)
        painter.setPen(QPen(QColor(255, 255, 255), 1.5))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawEllipse(QPointF(0, 0), r - 1, r - 1)
        arm = r * 0.55
        painter.setPen(QPen(QColor(255, 255, 255), 2.0))
        painter.drawLine(QPointF(-arm, 0), QPointF(arm, 0))
        if self.positive:
            painter.drawLine(QPointF(0, -arm), QPointF(0, arm))


class ClickMarkers(QGraphicsItem):
    """The markers of the clicks on the open image, in click order; paints nothing itself."""

    def __init__(self):
        super().__init__()
        self.setZValue(MARKERS_Z)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemHasNoContents)
        self._markers: list[ClickMarker] = []

    def boundingRect(self) -> QRectF:
        return QRectF()

    def paint(self, painter: QPainter, option, widget=None) -> None:
        pass

    def add(self, y: float, x: float, positive: bool) -> None:
        self._markers.append(ClickMarker(y, x, positive, self))

    def pop(self) -> None:
        """Remove the newest marker (none: nothing happens)."""
        if self._markers:
            marker = self._markers.pop()
            scene = marker.scene()
            marker.setParentItem(None)
            if scene is not None:
                scene.removeItem(marker)

    def clear(self) -> None:
        while self._markers:
            self.pop()

    def __len__(self) -> int:
        return len(self._markers)

    def points(self) -> list[tuple[float, float, bool]]:
        """(y, x, positive) of each marker, in image pixels, oldest first."""
        return [(m.pos().y() - 0.5, m.pos().x() - 0.5, m.positive) for m in self._markers]
