"""Display windowing the way radiology viewers do it: Shift + right-button drag on the canvas
changes the level (vertical: down = higher level, darker) and the width (horizontal: right = wider,
less contrast); a preset list in the tools panel's "Display window" group offers the file's own
windows, its VOI LUT, the automatic window and the CT presets. Display only: stored values never
change.

The controller only decides windows; the main window applies them (``window_chosen``) and hands
every applied window back through ``show_window``. Drag redraws are throttled to one per
``REDRAW_MS`` so a fast mouse never queues up renders on the GUI thread.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QLabel

from segdesk.core import display
from segdesk.core.dicom_image import center_width, window_from_center_width
from segdesk.core.display import auto_window
from segdesk.core.image import Image

REDRAW_MS = 30
# Drag sensitivity relative to the window at the press, so a narrow brain window and a wide lung
# window feel the same: 200 px right doubles the width (left halves it), 100 px moves the level
# by a quarter of the width.
WIDTH_DOUBLING_PX = 200.0
LEVEL_WIDTHS_PER_PX = 1.0 / 400.0
CUSTOM = "Custom"


class WindowingController(QObject):
    window_chosen = Signal(object)  # (low, high), or None for the image's default window
    described = Signal(str)  # one line about a DICOM image: modality, series, instance, frame

    def __init__(self, canvas, tools, parent=None):
        super().__init__(parent)
        self._tools = tools
        self._image: Image | None = None
        self._window: tuple[float, float] | None = None
        self._presets: list[tuple[str, tuple[float, float] | None]] = []
        self._drag_start: tuple[float, float] | None = None  # (level, width) at the press
        self._pending: tuple[float, float] | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._flush)
        canvas.window_drag.connect(self._on_drag)

        self.preset_box = QComboBox()
        self.preset_box.setToolTip("Display window presets; Shift + right-drag on the image adjusts "
                                   "level (up/down) and width (left/right)")
        self.preset_box.activated.connect(self._on_preset)
        self.level_width = QLabel()
        form = tools.window_box.layout()
        form.insertRow(0, "Preset", self.preset_box)
        form.addRow(self.level_width)

    # ----- following the window

    def set_image(self, image: Image | None, window: tuple[float, float] | None) -> None:
        """A new image is shown with ``window``: refill the presets and describe the image."""
        self._image, self._drag_start, self._pending = image, None, None
        self._timer.stop()
        self._presets = display.presets(image) if image is not None else []
        self.preset_box.blockSignals(True)
        self.preset_box.clear()
        self.preset_box.addItem(CUSTOM)
        for name, _ in self._presets:
            self.preset_box.addItem(name)
        self.preset_box.blockSignals(False)
        self.show_window(window)
        text = display.describe(image) if image is not None else ""
        if text:
            self.described.emit(text)

    def show_window(self, window: tuple[float, float] | None) -> None:
        """Show an applied window in the tools panel (hidden when None) and the matching preset."""
        self._window = window
        self._tools.show_window(window)
        row = 0
        if window is not None:
            level, width = center_width(window)
            self.level_width.setText(f"Level {_short(level)} · Width {_short(width)}")
            for i, (_, preset) in enumerate(self._presets, start=1):
                if preset is not None and all(abs(a - b) < 1e-6 for a, b in zip(preset, window)):
                    row = i
                    break
        self.preset_box.blockSignals(True)
        self.preset_box.setCurrentIndex(row)
        self.preset_box.blockSignals(False)

    @property
    def window(self) -> tuple[float, float] | None:
        return self._window

    # ----- user input

    def _on_preset(self, row: int) -> None:
        if self._image is None or not 1 <= row <= len(self._presets):
            return
        window = self._presets[row - 1][1]
        self.window_chosen.emit(window if window is not None else auto_window(self._image.pixels))

    def _on_drag(self, dx: float, dy: float, finished: bool) -> None:
        if self._image is None or self._window is None:
            return
        if self._drag_start is None:
            self._drag_start = center_width(self._window)
        level, width = self._drag_start
        least = 1.0 if self._image.pixels.dtype.kind in "iu" else 1e-6 * max(abs(level), 1.0)
        self._pending = window_from_center_width(level + dy * width * LEVEL_WIDTHS_PER_PX,
                                                 max(width * 2.0 ** (dx / WIDTH_DOUBLING_PX), least))
        if finished:
            self._drag_start = None
            self._flush()
        elif not self._timer.isActive():
            self._timer.start()

    def _flush(self) -> None:
        self._timer.stop()
        if self._pending is not None:
            window, self._pending = self._pending, None
            self.window_chosen.emit(window)


def _short(value: float) -> str:
    """One decimal at most: '40', '237.8', '-0.5'."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text
