"""Line and bar charts for the benchmark PNGs, drawn with matplotlib's Agg canvas (no display needed).

Each chart is a panel with a title and one or more series; panels stack vertically into one image.
Legends sit to the right of the axes, outside them, so they never cover data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

WIDTH = 900
PANEL_HEIGHT = 300
_DPI = 100
# Wong palette (colour-blind safe)
COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"]
_HLINE = "#777777"


@dataclass
class Series:
    label: str
    y: list[float | None]  # None: a gap
    x: list[float] | None = None  # default 1..n
    bars: bool = False


@dataclass
class Panel:
    title: str
    series: list[Series]
    y_range: tuple[float, float] | None = None  # default: from the data
    x_label: str = ""
    y_log: bool = False
    x_ticks: list[tuple[float, str]] | None = None
    hlines: list[tuple[float, str]] = field(default_factory=list)


def _xy(s: Series) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(s.x if s.x is not None else range(1, len(s.y) + 1), float)
    y = np.array([np.nan if v is None else v for v in s.y], float)  # NaN breaks the line
    return x, y


def _y_limits(panel: Panel, ys: np.ndarray) -> tuple[float, float]:
    if panel.y_range is not None:
        return panel.y_range
    lo = float(ys.min()) if panel.y_log else min(float(ys.min()), 0.0)
    hi = float(ys.max()) * 1.1
    return lo, hi if hi > lo else lo + 1.0


def _draw_panel(ax, panel: Panel) -> None:
    ax.set_title(panel.title, loc="left", fontsize=10.5)
    ax.set_xlabel(panel.x_label)
    data = [_xy(s) for s in panel.series]
    ys = np.concatenate([y for _, y in data]) if data else np.array([])
    ys = ys[~np.isnan(ys)]
    if ys.size == 0:
        ax.text(0.5, 0.5, "(no data)", transform=ax.transAxes, ha="center", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if panel.y_log:
        ax.set_yscale("log")
    lo, hi = _y_limits(panel, ys)
    bar_series = [s for s in panel.series if s.bars]
    width = 0.8 / max(len(bar_series), 1)
    for i, (s, (x, y)) in enumerate(zip(panel.series, data)):
        colour = COLOURS[i % len(COLOURS)]
        if s.bars:
            offset = -0.4 + (bar_series.index(s) + 0.5) * width
            ax.bar(x + offset, np.nan_to_num(y, nan=lo), width, bottom=lo if panel.y_log else 0.0,
                   color=colour, label=s.label, zorder=2)
        else:
            # earlier series drawn wider, so one hidden under a later, equal series still shows at its edges
            ax.plot(x, y, color=colour, label=s.label, linewidth=max(3.2 - 0.6 * i, 1.4),
                    marker="o", markersize=max(6.0 - 0.8 * i, 3.5), zorder=3 + i)
    for value, label in panel.hlines:
        ax.axhline(value, color=_HLINE, linewidth=1.2, linestyle="--", label=label, zorder=1)
    ax.set_ylim(lo, hi)
    if panel.x_ticks:
        ax.set_xticks([x for x, _ in panel.x_ticks], [label for _, label in panel.x_ticks])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True, steps=[1, 2, 5, 10]))
    if bar_series:
        xs = np.concatenate([x for x, _ in data])
        ax.set_xlim(xs.min() - 0.6, xs.max() + 0.6)
    ax.grid(axis="y", color="#e1e1e1", zorder=0)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False, fontsize=9)


def save(panels: list[Panel], path: str | Path) -> Path:
    """Draw ``panels`` one under another and write a PNG (``WIDTH`` x ``PANEL_HEIGHT`` per panel)."""
    path = Path(path)
    fig = Figure(figsize=(WIDTH / _DPI, PANEL_HEIGHT * len(panels) / _DPI), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: PNG without a display or a GUI toolkit
    for ax, panel in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels):
        _draw_panel(ax, panel)
    fig.savefig(path, format="png", dpi=_DPI)
    return path
