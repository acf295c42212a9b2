"""Display windowing the way radiology viewers do it: Shift + right-button drag on the canvas
changes the level (vertical: down = higher level, darker) and the width (horizontal: right = wider,
less contrast); a preset list in the tools panel's "Display window" group offers the file's own
windows, its VOI LUT, the automatic window and the CT presets. Display only: stored values never
change.

The controller holds no widgets: it decides windows and says what to show. The user's choices come
in through ``drag``, ``choose_preset``, ``choose_window`` and ``reset``; the main window applies a
chosen window (``window_chosen``) and hands every applied window back through ``show_window``, which
the tools panel follows (``ToolsPanel.bind_windowing``). Drag redraws are throttled to one per
``REDRAW_MS`` so a fast mouse never queues up renders on the GUI thread.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal

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


class WindowingController(QObject):
    window_chosen = Signal(object)  # the user's choice to apply: (low, high), or None for the image's default
    window_changed = Signal(float, float)  # the applied window: low, high
    windowing_available = Signal(bool)  # the image on screen has a display window (more than 8 bits)
    presets_changed = Signal(list)  # the preset names of the image on screen
    preset_matched = Signal(int)  # index of the preset that is the applied window; -1: none ("Custom")
    described = Signal(str)  # one line about a DICOM image: modality, series, instance, frame

    def __init__(self, parent=None):
        super().__init__(parent)
        self._image: Image | None = None
        self._window: tuple[float, float] | None = None
        self._presets: list[tuple[str, tuple[float, float] | None]] = []
        self._drag_start: tuple[float, float] | None = None  # (level, width) at the press
        self._pending: tuple[float, float] | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._flush)

    # ----- following the window

    def set_image(self, image: Image | None, window: tuple[float, float] | None) -> None:
        """A new image is shown with ``window``: new presets, the window, and a description."""
        self._image, self._drag_start, self._pending = image, None, None
        self._timer.stop()
        self._presets = display.presets(image) if image is not None else []
        self.presets_changed.emit([name for name, _ in self._presets])
        self.show_window(window)
        text = display.describe(image) if image is not None else ""
        if text:
            self.described.emit(text)

    def show_window(self, window: tuple[float, float] | None) -> None:
        """An applied window (None: the image has none): say so, and which preset it is."""
        self._window = window
        self.windowing_available.emit(window is not None)
        if window is None:
            self.preset_matched.emit(-1)
            return
        self.window_changed.emit(*window)
        match = next((i for i, (_, preset) in enumerate(self._presets)
                      if preset is not None and all(abs(a - b) < 1e-6 for a, b in zip(preset, window))), -1)
        self.preset_matched.emit(match)

    @property
    def window(self) -> tuple[float, float] | None:
        return self._window

    # ----- user input

    def choose_preset(self, index: int) -> None:
        """The user picked preset ``index`` of those ``presets_changed`` named; the automatic one is computed here."""
        if self._image is None or not 0 <= index < len(self._presets):
            return
        window = self._presets[index][1]
        self.window_chosen.emit(window if window is not None else auto_window(self._image.pixels))

    def choose_window(self, low: float, high: float) -> None:
        """The user typed a window."""
        if self._window is not None and high > low:
            self.window_chosen.emit((low, high))

    def reset(self) -> None:
        """Back to the image's own window: the DICOM file's window, else automatic."""
        if self._window is not None:
            self.window_chosen.emit(None)

    def drag(self, dx: float, dy: float, finished: bool) -> None:
        """Shift + right-drag on the canvas: ``dx``, ``dy`` view pixels since the press."""
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

