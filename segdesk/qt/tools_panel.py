"""Tools panel: tool buttons, brush size, classes, overlay opacity/outline and display window.

Each widget binds one attribute of the tool controller both ways and blocks its own signals while
it follows the model (napari's brush-size slider).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from segdesk.core import encoding
from segdesk.core.project import LabelClass
from segdesk.qt.overlay import BACKGROUND_RGB
from segdesk.qt.tool_controller import MAX_RADIUS, ToolController


def _swatch(rgb: tuple[int, int, int]) -> QIcon:
    pix = QPixmap(14, 14)
    pix.fill(QColor(*rgb))
    return QIcon(pix)


class ToolsPanel(QWidget):
    opacity_changed = Signal(float)
    window_changed = Signal(float, float)
    window_auto = Signal()

    def __init__(self, controller: ToolController, tool_actions: list[QAction], outline: QAction, parent=None):
        super().__init__(parent)
        self._controller = controller
        layout = QVBoxLayout(self)

        tools = QGroupBox("Tool")
        row = QHBoxLayout(tools)
        for action in tool_actions:
            button = QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            row.addWidget(button)
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
        self.window_low = QDoubleSpinBox()
        self.window_high = QDoubleSpinBox()
        for spin in (self.window_low, self.window_high):
            spin.setRange(-1e9, 1e9)
            spin.setDecimals(1)
            spin.setKeyboardTracking(False)
            spin.valueChanged.connect(self._on_window_edit)
        auto = QPushButton("Reset")
        auto.setToolTip("Back to the image's own window: the DICOM file's window, else automatic")
        auto.clicked.connect(self.window_auto.emit)
        window_form.addRow("Low", self.window_low)
        window_form.addRow("High", self.window_high)
        window_form.addRow(auto)
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

    def show_window(self, window: tuple[float, float] | None) -> None:
        """Show the window controls for images with more than 8 bits, with ``window``'s values."""
        self.window_box.setVisible(window is not None)
        if window is not None:
            self._follow(self.window_low, self.window_low.setValue)(window[0])
            self._follow(self.window_high, self.window_high.setValue)(window[1])

    def _on_window_edit(self, _value: float) -> None:
        low, high = self.window_low.value(), self.window_high.value()
        if high > low:
            self.window_changed.emit(low, high)
