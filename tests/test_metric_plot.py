"""The live training plot (pyqtgraph): the curves show what was added, clear empties them, hover reads out."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF

from segdesk.qt.metric_plot import REDRAW_MS, MetricPlot


def _curve(item) -> list[tuple[float, float]]:
    x, y = item.getData()
    return [] if x is None else list(zip(x.tolist(), y.tolist()))


def test_the_curves_show_the_points_added(qtbot):
    plot = MetricPlot()
    qtbot.addWidget(plot)
    plot.add(5, 0.9, None)
    plot.add(10, 0.5, 0.25)
    plot.add(15, 0.4, None)
    assert plot.loss == [(5, 0.9), (10, 0.5), (15, 0.4)] and plot.dice == [(10, 0.25)]
    qtbot.waitUntil(lambda: len(_curve(plot._loss_curve)) == 3)  # redraws are batched on a timer
    assert _curve(plot._loss_curve) == [(5.0, 0.9), (10.0, 0.5), (15.0, 0.4)]
    assert _curve(plot._dice_curve) == [(10.0, 0.25)]
    assert plot._dice_view.viewRange()[1] == [-0.02, 1.02]  # Dice keeps its 0..1 scale
    assert "validation Dice" in plot.plot_widget.getPlotItem().titleLabel.text

    plot.add(20, float("nan"), None)  # an unknown loss (a trainer elsewhere): kept, not drawn
    assert len(plot.loss) == 4
    qtbot.waitUntil(lambda: not plot._redraw_timer.isActive(), timeout=10 * REDRAW_MS)  # the redraw has run
    assert len(_curve(plot._loss_curve)) == 3

    plot.clear()
    assert plot.loss == [] and plot.dice == []
    qtbot.waitUntil(lambda: _curve(plot._loss_curve) == [])
    assert _curve(plot._dice_curve) == []
    assert "No training yet" in plot.plot_widget.getPlotItem().titleLabel.text


def test_hover_reads_out_the_nearest_step(qtbot):
    plot = MetricPlot()
    qtbot.addWidget(plot)
    plot.resize(300, 200)
    plot.show()
    for step in range(0, 101, 5):
        plot.add(step, 1.0 / (step + 1), 0.5 if step % 20 == 0 else None)
    qtbot.waitUntil(lambda: len(_curve(plot._loss_curve)) == 21)
    box = plot.plot_widget.getPlotItem().vb
    qtbot.waitUntil(lambda: box.viewRange()[0][1] >= 100)
    title = plot.plot_widget.getPlotItem().titleLabel
    plot.plot_widget.scene().sigMouseMoved.emit(box.mapViewToScene(QPointF(41.0, 0.5)))
    assert "step 40" in title.text and f"loss {1 / 41:.3f}" in title.text and "Dice 0.500" in title.text
    assert plot._cursor.isVisible() and np.isclose(plot._cursor.value(), 40)
    plot.plot_widget.scene().sigMouseMoved.emit(box.sceneBoundingRect().topLeft() - QPointF(5, 5))
    assert "validation Dice" in title.text and not plot._cursor.isVisible()
