"""Turns canvas mouse events into label document edits for the current tool."""

from __future__ import annotations

import logging
from enum import Enum

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QGuiApplication

from segdesk.core import encoding
from segdesk.core.label_document import LabelDocument
from segdesk.qt.canvas import Canvas

log = logging.getLogger(__name__)

MIN_RADIUS, MAX_RADIUS = 0.5, 200.0
ERASE = encoding.UNLABELLED


class Tool(str, Enum):
    BRUSH = "brush"
    ERASER = "eraser"
    FILL = "fill"
    POLYGON = "polygon"
    CLICK = "click"


class ToolController(QObject):
    """Owns the current tool, value and brush size; edits the document the canvas shows.

    Right mouse button with the brush erases, the way painters expect. Emits ``edited`` once per
    finished stroke, fill or polygon (one undo step each), which the window turns into an autosave.
    The Click tool edits nothing itself: it emits ``click_placed`` for the click session
    (qt/click_session.py), which asks the model and edits through ``changed``.
    """

    edited = Signal()
    click_placed = Signal(float, float, bool)  # image pixel x, y; positive ("this is the selected class")
    document_changed = Signal()  # another label document (or none) is edited now
    undoing = Signal()  # an undo is about to run (the click session drops a click whose change it undoes)
    tool_changed = Signal(str)
    radius_changed = Signal(float)
    value_changed = Signal(int)

    def __init__(self, canvas: Canvas, parent=None):
        super().__init__(parent)
        self._canvas = canvas
        self._doc: LabelDocument | None = None
        self._tool = Tool.BRUSH
        self._value = encoding.class_value(0)  # the first class
        self._radius = 5.0
        self._stroking = False
        self._polygon: list[tuple[float, float]] = []
        canvas.pressed.connect(self._on_pressed)
        canvas.moved.connect(self._on_moved)
        canvas.released.connect(self._on_released)
        canvas.double_clicked.connect(self._on_double_clicked)
        canvas.hovered.connect(self._on_hovered)
        canvas.set_brush_radius(self._radius)

    # ----- state

    @property
    def tool(self) -> Tool:
        return self._tool

    @property
    def value(self) -> int:
        return self._value

    @property
    def radius(self) -> float:
        return self._radius

    def set_document(self, doc: LabelDocument | None) -> None:
        self.finish_stroke()
        self.cancel_polygon()
        self._doc = doc
        self.document_changed.emit()

    def set_tool(self, tool: Tool | str) -> None:
        tool = Tool(tool)
        if tool == self._tool:
            return
        self.finish_stroke()
        self.cancel_polygon()
        self._tool = tool
        self._canvas.set_brush_radius(self._radius, visible=tool in (Tool.BRUSH, Tool.ERASER))
        self.tool_changed.emit(tool.value)

    def set_value(self, value: int) -> None:
        if value != self._value:
            self._value = value
            self.value_changed.emit(value)

    def set_radius(self, radius: float) -> None:
        radius = float(min(MAX_RADIUS, max(MIN_RADIUS, radius)))
        if radius != self._radius:
            self._radius = radius
            self._canvas.set_brush_radius(radius, visible=self._tool in (Tool.BRUSH, Tool.ERASER))
            self.radius_changed.emit(radius)

    def bigger(self) -> None:
        self.set_radius(max(self._radius + 1, self._radius * 1.25))

    def smaller(self) -> None:
        self.set_radius(min(self._radius - 1, self._radius / 1.25))

    # ----- edits

    def _refresh(self, box) -> None:
        if box is not None and self._canvas.overlay is not None:
            self._canvas.overlay.refresh(box)
        if box is not None and self._canvas.proposal is not None:
            self._canvas.proposal.refresh(box)  # it hides under what the user has said

    def changed(self, box) -> None:
        """Someone else (the click session) changed ``box`` of the document: show and save it."""
        if box is not None:
            self._refresh(box)
            self.edited.emit()

    @staticmethod
    def _pixel(x: float, y: float) -> tuple[float, float]:
        """Scene coordinates put pixel i's centre at i + 0.5; the document puts it at i."""
        return x - 0.5, y - 0.5

    def _on_pressed(self, x: float, y: float, button) -> None:
        if self._doc is None:
            return
        px, py = self._pixel(x, y)
        if self._tool in (Tool.BRUSH, Tool.ERASER) and button in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            erase = self._tool == Tool.ERASER or button == Qt.MouseButton.RightButton
            self._doc.begin_stroke(ERASE if erase else self._value, self._radius)
            self._stroking = True
            self._refresh(self._doc.stroke_to(px, py))
        elif self._tool == Tool.FILL and button == Qt.MouseButton.LeftButton:
            h, w = self._doc.shape
            ix, iy = int(round(px)), int(round(py))
            if 0 <= ix < w and 0 <= iy < h:
                box = self._doc.fill(ix, iy, self._value)
                if box is not None:
                    self._refresh(box)
                    self.edited.emit()
        elif self._tool == Tool.CLICK and button in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            shift = bool(QGuiApplication.keyboardModifiers() & Qt.KeyboardModifier.ShiftModifier)
            self.click_placed.emit(px, py, button == Qt.MouseButton.LeftButton and not shift)
        elif self._tool == Tool.POLYGON:
            if button == Qt.MouseButton.RightButton:
                self.close_polygon()
            elif button == Qt.MouseButton.LeftButton:
                self._polygon.append((px, py))
                self._canvas.set_path([(p[0] + 0.5, p[1] + 0.5) for p in self._polygon])

    def _on_moved(self, x: float, y: float) -> None:
        if self._stroking and self._doc is not None:
            self._refresh(self._doc.stroke_to(*self._pixel(x, y)))

    def _on_released(self, x: float, y: float, button) -> None:
        self.finish_stroke()

    def _on_double_clicked(self, x: float, y: float) -> None:
        if self._tool == Tool.POLYGON:
            self.close_polygon()

    def _on_hovered(self, x: float, y: float) -> None:
        if self._tool == Tool.POLYGON and self._polygon:
            self._canvas.set_path([(p[0] + 0.5, p[1] + 0.5) for p in self._polygon], hover=(x, y))

    def finish_stroke(self) -> None:
        if self._stroking and self._doc is not None:
            self._stroking = False
            self._doc.end_stroke()
            self.edited.emit()

    def close_polygon(self) -> None:
        points = self._dedup(self._polygon)
        self.cancel_polygon()
        if self._doc is not None and len(points) >= 3:
            box = self._doc.polygon(points, self._value)
            if box is not None:
                self._refresh(box)
                self.edited.emit()

    def cancel_polygon(self) -> None:
        self._polygon = []
        self._canvas.set_path([])

    @staticmethod
    def _dedup(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for p in points:
            if not out or abs(out[-1][0] - p[0]) + abs(out[-1][1] - p[1]) > 0.5:
                out.append(p)
        return out

    def undo(self) -> None:
        if self._doc is not None and not self._stroking:
            self.undoing.emit()
            box = self._doc.undo()
            if box is not None:
                self._refresh(box)
                self.edited.emit()

    def redo(self) -> None:
        if self._doc is not None and not self._stroking:
            box = self._doc.redo()
            if box is not None:
                self._refresh(box)
                self.edited.emit()
