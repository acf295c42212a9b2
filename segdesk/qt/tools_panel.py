"""Tools panel: tool buttons, brush size, classes, overlay opacity/outline and display window.

Each widget binds one attribute of the tool controller (or, for the display window, of the
windowing controller) both ways and blocks its own signals while it follows the model (napari's
brush-size slider).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from segdesk.core import encoding
from segdesk.core.dicom_image import center_width
from segdesk.core.project import LabelClass
from segdesk.qt.overlay import BACKGROUND_RGB
from segdesk.qt.tool_controller import MAX_RADIUS, Tool, ToolController
from segdesk.qt.windowing import WindowingController

CUSTOM = "Custom"  # the preset row of a window that is no preset
CLICK_HINT = ("Left click: this is the selected class. Right click or Shift+click: this is not. "
              "Backspace removes the last click.")


def _swatch(rgb: tuple[int, int, int]) -> QIcon:
    pix = QPixmap(14, 14)
    pix.fill(QColor(*rgb))
    return QIcon(pix)


class ToolsPanel(QWidget):
    opacity_changed = Signal(float)

    def __init__(self, controller: ToolController, tool_actions: list[QAction], outline: QAction, parent=None):
        super().__init__(parent)
        self._controller = controller
        layout = QVBoxLayout(self)

        tools = QGroupBox("Tool")
        tools_layout = QVBoxLayout(tools)
        row = QHBoxLayout()
        for action in tool_actions:
            button = QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            row.addWidget(button)
        tools_layout.addLayout(row)
        self.click_hint = QLabel(CLICK_HINT)  # how the Click tool reads the mouse, while it is chosen
        self.click_hint.setWordWrap(True)
        self.click_hint.setVisible(controller.tool == Tool.CLICK)
        tools_layout.addWidget(self.click_hint)
        controller.tool_changed.connect(lambda name: self.click_hint.setVisible(name == Tool.CLICK.value))
        layout.addWidget(tools)

        size_box = QGroupBox("Brush size (radius, pixels)")
        size_row = QHBoxLayout(size_box)
        self.size_slider = QSlider(Qt.Orientation.Horizontal)
        self.size_slider.setRange(1, int(MAX_RADIUS))
        self.size_spin = QDoubleSpinBox()
        self.size_spin.setRange(0.5, MAX_RADIUS)
        self.size_spin.setDecimals(1)
        size_row.addWidget(self.size_slider)
        size_row.addWidget(self.size_spin)
        layout.addWidget(size_box)
        self.size_slider.valueChanged.connect(lambda v: controller.set_radius(float(v)))
        self.size_spin.valueChanged.connect(controller.set_radius)
        controller.radius_changed.connect(self._show_radius)
        self._show_radius(controller.radius)

        classes_box = QGroupBox("Classes")
        classes_layout = QVBoxLayout(classes_box)
        self.class_list = QListWidget()
        classes_layout.addWidget(self.class_list)
        layout.addWidget(classes_box)
        self.class_list.currentRowChanged.connect(self._on_class_row)
        controller.value_changed.connect(self._show_value)

        view_box = QGroupBox("Overlay")
        view_form = QFormLayout(view_box)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.valueChanged.connect(lambda v: self.opacity_changed.emit(v / 100.0))
        view_form.addRow("Opacity", self.opacity_slider)
        self.outline_check = QCheckBox("Outline only")
        self.outline_check.toggled.connect(outline.setChecked)
        outline.toggled.connect(self._follow(self.outline_check, self.outline_check.setChecked))
        view_form.addRow(self.outline_check)
        layout.addWidget(view_box)

        self.window_box = QGroupBox("Display window")
        window_form = QFormLayout(self.window_box)
        self.preset_box = QComboBox()
        self.preset_box.setToolTip("Display window presets; Shift + right-drag on the image adjusts "
                                   "level (up/down) and width (left/right)")
        self.window_low = QDoubleSpinBox()
        self.window_high = QDoubleSpinBox()
        for spin in (self.window_low, self.window_high):
            spin.setRange(-1e9, 1e9)
            spin.setDecimals(1)
            spin.setKeyboardTracking(False)
        self.window_reset = QPushButton("Reset")
        self.window_reset.setToolTip("Back to the image's own window: the DICOM file's window, else automatic")
        self.level_width = QLabel()
        window_form.addRow("Preset", self.preset_box)
        window_form.addRow("Low", self.window_low)
        window_form.addRow("High", self.window_high)
        window_form.addRow(self.window_reset)
        window_form.addRow(self.level_width)
        layout.addWidget(self.window_box)
        self.window_box.setVisible(False)
        layout.addStretch(1)

    @staticmethod
    def _follow(widget: QWidget, setter):
        def apply(value) -> None:
            widget.blockSignals(True)
            setter(value)
            widget.blockSignals(False)
        return apply

    # ----- brush size

    def _show_radius(self, radius: float) -> None:
        self._follow(self.size_slider, self.size_slider.setValue)(int(round(radius)))
        self._follow(self.size_spin, self.size_spin.setValue)(radius)

    # ----- classes

    def set_classes(self, classes: list[LabelClass]) -> None:
        self.class_list.blockSignals(True)
        self.class_list.clear()
        background = QListWidgetItem(_swatch(BACKGROUND_RGB), "0  background")
        background.setData(Qt.ItemDataRole.UserRole, encoding.BACKGROUND)
        self.class_list.addItem(background)
        for i, c in enumerate(classes):
            number = encoding.class_number(i)
            item = QListWidgetItem(_swatch(c.rgb), f"{number}  {c.name}")
            item.setData(Qt.ItemDataRole.UserRole, encoding.label_value(number))
            self.class_list.addItem(item)
        self.class_list.blockSignals(False)
        self._show_value(self._controller.value)

    def _on_class_row(self, row: int) -> None:
        item = self.class_list.item(row)
        if item is not None:
            self._controller.set_value(int(item.data(Qt.ItemDataRole.UserRole)))

    def _show_value(self, value: int) -> None:
        for row in range(self.class_list.count()):
            if self.class_list.item(row).data(Qt.ItemDataRole.UserRole) == value:
                self._follow(self.class_list, self.class_list.setCurrentRow)(row)

    # ----- display window

    def bind_windowing(self, windowing: WindowingController) -> None:
        """Show the display window of the image on screen (images with more than 8 bits only) and
        send the user's choices to ``windowing``."""
        windowing.windowing_available.connect(self.window_box.setVisible)
        windowing.window_changed.connect(self._show_window)
        windowing.presets_changed.connect(self._show_presets)
        windowing.preset_matched.connect(lambda index: self._follow(
            self.preset_box, self.preset_box.setCurrentIndex)(index + 1))  # row 0: Custom
        self.preset_box.activated.connect(lambda row: windowing.choose_preset(row - 1))
        for spin in (self.window_low, self.window_high):
            spin.valueChanged.connect(lambda _v: windowing.choose_window(self.window_low.value(),
                                                                         self.window_high.value()))
        self.window_reset.clicked.connect(windowing.reset)

    def _show_presets(self, names: list[str]) -> None:
        self.preset_box.blockSignals(True)
        self.preset_box.clear()
        self.preset_box.addItems([CUSTOM, *names])
        self.preset_box.blockSignals(False)

    def _show_window(self, low: float, high: float) -> None:
        self._follow(self.window_low, self.window_low.setValue)(low)
        self._follow(self.window_high, self.window_high.setValue)(high)
        level, width = center_width((low, high))
        self.level_width.setText(f"Level {_short(level)} · Width {_short(width)}")


def _short(value: float) -> str:
    """One decimal at most: '40', '237.8', '-0.5'."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text
