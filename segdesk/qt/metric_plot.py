"""The live training plot: loss (left axis) and validation Dice (right axis, 0..1) against step, with pyqtgraph.

pyqtgraph brings pan (drag), zoom (wheel, or drag with the right button; the "A" button or the context
menu's "View All" restores), and the hover read-out: the title line is the legend and, under the mouse,
shows the nearest step's loss and Dice, so nothing covers the curves.
"""

from __future__ import annotations

# PySide6 first: pyqtgraph uses the Qt binding that is already imported
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

import numpy as np
import pyqtgraph as pg

MAX_POINTS = 2000  # bounded: older points are thinned, never an unbounded list
_DOTS_BELOW = 60  # a dot on each point while there are few
REDRAW_MS = 250  # new points are drawn at most this often: each redraw repaints the axes (~2 ms)


class MetricPlot(QWidget):
    """Two series against step: loss (left scale, auto) and validation Dice (right scale, 0..1).

    A QWidget holding a pyqtgraph PlotWidget, not a subclass: PlotWidget binds plotItem's ``clear``
    (remove every curve) over any ``clear`` of its own."""

    LOSS = "#d55e00"
    DICE = "#0072b2"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.loss: list[tuple[int, float]] = []
        self.dice: list[tuple[int, float]] = []
        self._shown_title: str | None = None
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.plot_widget = pg.PlotWidget(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)
        item = self.plot_widget.getPlotItem()
        self._text = self._style(item)
        self._dice_view = self._add_dice_view(item)
        item.vb.sigResized.connect(self._match_views)

        self._loss_curve = pg.PlotDataItem(pen=pg.mkPen(self.LOSS, width=1.6), antialias=True,
                                           symbolPen=None, symbolBrush=self.LOSS, symbolSize=4)
        self._dice_curve = pg.PlotDataItem(pen=pg.mkPen(self.DICE, width=1.6), antialias=True,
                                           symbolPen=None, symbolBrush=self.DICE, symbolSize=4)
        item.addItem(self._loss_curve)
        self._dice_view.addItem(self._dice_curve)
        self._cursor = pg.InfiniteLine(angle=90, pen=pg.mkPen(self._text, width=1, style=Qt.PenStyle.DotLine))
        self._cursor.setVisible(False)
        item.addItem(self._cursor, ignoreBounds=True)
        self.plot_widget.scene().sigMouseMoved.connect(self._hover)
        self._redraw_timer = QTimer(self, singleShot=True, interval=REDRAW_MS)
        self._redraw_timer.timeout.connect(self._redraw)
        self._show_legend()

    def _style(self, item: pg.PlotItem) -> str:
        """Axes in the window's palette, each scale's numbers in its curve's colour; the text colour."""
        palette = self.palette()
        self.plot_widget.setBackground(palette.color(QPalette.ColorRole.Base))
        # no grid: pyqtgraph draws it with the axes, and it made every repaint of the plot 10 ms of
        # the GUI thread instead of 2 (`segdesk bench ui` found it among the longest stalls); the
        # hover read-out gives exact values
        item.showAxis("right")
        text = palette.color(QPalette.ColorRole.Text)
        item.setLabel("bottom", "step", color=text.name())
        for name, colour in (("left", self.LOSS), ("right", self.DICE), ("bottom", text)):
            axis = item.getAxis(name)
            axis.setPen(palette.color(QPalette.ColorRole.Mid))
            axis.setTextPen(colour)
        item.getAxis("left").setWidth(36)
        item.getAxis("right").setWidth(28)
        return text.name()

    def _add_dice_view(self, item: pg.PlotItem) -> pg.ViewBox:
        """A second view for Dice on the right axis, sharing x; its y range stays 0..1. It sits behind
        the loss view, so drags and the wheel reach the loss view (pyqtgraph hands them to the top one)."""
        view = pg.ViewBox(enableMouse=False)
        view.setZValue(item.vb.zValue() - 1)
        self.plot_widget.scene().addItem(view)
        item.getAxis("right").linkToView(view)
        view.setXLink(item)
        view.setYRange(0.0, 1.0, padding=0.02)
        return view

    def clear(self) -> None:
        self.loss.clear()
        self.dice.clear()
        self.plot_widget.getPlotItem().enableAutoRange()  # a new run: follow the data again, even after a pan or zoom
        self._schedule()

    def add(self, step: int, loss: float | None, dice: float | None) -> None:
        if loss is not None:
            self._append(self.loss, step, loss)
        if dice is not None:
            self._append(self.dice, step, dice)
        self._schedule()

    def _schedule(self) -> None:
        if not self._redraw_timer.isActive():  # not restarted: a steady stream still redraws
            self._redraw_timer.start()

    @staticmethod
    def _append(series: list, step: int, value: float) -> None:
        series.append((step, float(value)))
        if len(series) > MAX_POINTS:
            del series[1::2]  # keep every other point

    def _redraw(self) -> None:
        for curve, series in ((self._loss_curve, self.loss), (self._dice_curve, self.dice)):
            steps, values = (np.array(c, float) for c in zip(*series)) if series else (np.empty(0), np.empty(0))
            drawn = np.isfinite(values)  # a trainer elsewhere reports an unknown loss as NaN
            curve.setData(steps[drawn], values[drawn], symbol="o" if len(series) < _DOTS_BELOW else None)
        if not self._cursor.isVisible():  # keep a hover read-out
            self._show_legend()

    def _match_views(self) -> None:
        box = self.plot_widget.getPlotItem().vb
        self._dice_view.setGeometry(box.sceneBoundingRect())
        self._dice_view.linkedViewChanged(box, self._dice_view.XAxis)

    def _show_legend(self) -> None:
        if not (self.loss or self.dice):
            self._title(f'<span style="color:{self._text}">No training yet</span>')
        else:
            self._title(f'<span style="color:{self.LOSS}">━ loss</span>&nbsp;&nbsp;&nbsp;'
                        f'<span style="color:{self.DICE}">━ validation Dice</span>')

    def _title(self, html: str) -> None:
        item = self.plot_widget.getPlotItem()
        if self._shown_title == html:
            return  # a new title lays the plot out again
        self._shown_title = html
        item.setTitle(html, size="9pt")
        item.titleLabel.setMinimumWidth(0)  # a long read-out must not widen the plot past the panel

    def _hover(self, pos) -> None:
        box = self.plot_widget.getPlotItem().vb
        if not (self.loss or self.dice) or not box.sceneBoundingRect().contains(pos):
            self._unhover()
            return
        step = _nearest(self.loss or self.dice, box.mapSceneToView(pos).x())[0]
        parts = [f'<span style="color:{self._text}">step {step}</span>']
        for name, series, colour in (("loss", self.loss, self.LOSS), ("Dice", self.dice, self.DICE)):
            if series:  # Dice: the nearest validation, a dot on the curve
                parts.append(f'<span style="color:{colour}">{name} {_nearest(series, step)[1]:.3f}</span>')
        self._cursor.setPos(step)
        self._cursor.setVisible(True)
        self._title("&nbsp;&nbsp;".join(parts))

    def _unhover(self) -> None:
        self._cursor.setVisible(False)
        self._show_legend()

    def leaveEvent(self, event) -> None:
        self._unhover()
        super().leaveEvent(event)


def _nearest(series: list[tuple[int, float]], step: float) -> tuple[int, float]:
    """The point of ``series`` (sorted by step) closest to ``step``."""
    steps = np.fromiter((s for s, _ in series), float, len(series))
    i = int(np.clip(np.searchsorted(steps, step), 1, len(steps) - 1)) if len(steps) > 1 else 0
    if i and abs(steps[i - 1] - step) <= abs(steps[i] - step):
        i -= 1
    return series[i]
