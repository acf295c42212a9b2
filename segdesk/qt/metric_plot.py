"""A small line plot of validation Dice and loss over training steps, drawn with QPainter."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

MAX_POINTS = 2000  # bounded: older points are thinned, never an unbounded list


class MetricPlot(QWidget):
    """Two series against step: loss (left scale, auto) and validation Dice (right scale, 0..1)."""

    LOSS = QColor("#d55e00")
    DICE = QColor("#0072b2")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.loss: list[tuple[int, float]] = []
        self.dice: list[tuple[int, float]] = []
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def clear(self) -> None:
        self.loss.clear()
        self.dice.clear()
        self.update()

    def add(self, step: int, loss: float | None, dice: float | None) -> None:
        if loss is not None:
            self._append(self.loss, step, loss)
        if dice is not None:
            self._append(self.dice, step, dice)
        self.update()

    @staticmethod
    def _append(series: list, step: int, value: float) -> None:
        series.append((step, float(value)))
        if len(series) > MAX_POINTS:
            del series[1::2]  # keep every other point

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), self.palette().base())
        area = QRectF(self.rect()).adjusted(34, 8, -34, -20)
        p.setPen(QPen(self.palette().mid().color(), 1))
        p.drawRect(area)
        steps = [s for s, _ in self.loss + self.dice]
        if not steps:
            p.setPen(self.palette().text().color())
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, "No training yet")
            return
        s0, s1 = min(steps), max(max(steps), min(steps) + 1)
        loss_top = max((v for _, v in self.loss), default=1.0) * 1.05 or 1.0
        self._line(p, area, self.loss, s0, s1, 0.0, loss_top, self.LOSS)
        self._line(p, area, self.dice, s0, s1, 0.0, 1.0, self.DICE)
        p.setPen(self.LOSS)
        p.drawText(QRectF(0, area.top() - 4, 32, 14), Qt.AlignmentFlag.AlignRight, f"{loss_top:.2g}")
        p.drawText(QRectF(0, area.bottom() - 10, 32, 14), Qt.AlignmentFlag.AlignRight, "0")
        p.setPen(self.DICE)
        p.drawText(QRectF(area.right() + 3, area.top() - 4, 32, 14), Qt.AlignmentFlag.AlignLeft, "1")
        p.drawText(QRectF(area.right() + 3, area.bottom() - 10, 32, 14), Qt.AlignmentFlag.AlignLeft, "0")
        p.setPen(self.palette().text().color())
        p.drawText(QRectF(area.left(), area.bottom() + 3, area.width(), 14), Qt.AlignmentFlag.AlignLeft, f"step {s0}")
        p.drawText(QRectF(area.left(), area.bottom() + 3, area.width(), 14), Qt.AlignmentFlag.AlignRight, f"{s1}")
        p.setPen(self.LOSS)
        p.drawText(QRectF(area.left() + 6, area.top() + 2, area.width(), 14), Qt.AlignmentFlag.AlignLeft, "loss")
        p.setPen(self.DICE)
        p.drawText(QRectF(area.left(), area.top() + 2, area.width() - 6, 14), Qt.AlignmentFlag.AlignRight,
                   "validation Dice")

    @staticmethod
    def _line(p: QPainter, area: QRectF, series, s0, s1, v0, v1, colour: QColor) -> None:
        if not series:
            return
        def point(s, v):
            x = area.left() + (s - s0) / (s1 - s0) * area.width()
            y = area.bottom() - (min(max(v, v0), v1) - v0) / (v1 - v0) * area.height()
            return QPointF(x, y)
        path = QPainterPath(point(*series[0]))
        for s, v in series[1:]:
            path.lineTo(point(s, v))
        p.setPen(QPen(colour, 1.6))
        p.drawPath(path)
        if len(series) < 60:
            for s, v in series:
                p.drawEllipse(point(s, v), 2, 2)
