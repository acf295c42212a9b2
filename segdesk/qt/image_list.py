"""The project's image list, with each image's status visible, and which image comes next.

Above the list, "Next:" chooses where Next image and accept go on: "in order" or "least sure first"
(the image whose proposal the model is least sure of, segdesk.core.next_image). With the latter,
each image's stored uncertainty is shown after its name.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from segdesk.core.next_image import IN_ORDER, UNCERTAIN
from segdesk.core.project import STATUS_ACCEPTED, STATUS_IN_PROGRESS, STATUS_NEW, ImageEntry

STATUS_COLOURS = {STATUS_NEW: "#8a8a8a", STATUS_IN_PROGRESS: "#e69f00", STATUS_ACCEPTED: "#2ca02c"}
ERROR_COLOUR = "#d62728"
ORDER_TEXT = {IN_ORDER: "in order", UNCERTAIN: "least sure first"}
ORDER_TIP = ("Where Next image and Accept go on: the next image in the list, or the image whose "
             "proposal the current model is least sure of (scored in the background; images not "
             "scored yet come last)")


def _dot(colour: str) -> QIcon:
    pix = QPixmap(12, 12)
    pix.fill(QColor(colour))
    return QIcon(pix)


class ImageList(QWidget):
    """Shows ``status · name`` (and ``unsure 0.31`` when known); emits ``image_chosen(image_id)``
    when the user picks one and ``order_chosen(order)`` when they change "Next:"."""

    image_chosen = Signal(str)
    order_chosen = Signal(str)  # segdesk.core.next_image.IN_ORDER or UNCERTAIN

    def __init__(self, parent=None):
        super().__init__(parent)
        self.list = QListWidget()
        self.order = QComboBox()
        for order, text in ORDER_TEXT.items():
            self.order.addItem(text, order)
        self.order.setToolTip(ORDER_TIP)
        self.order.setAccessibleName("Next image")
        self.order.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # keys stay with the canvas
        self.order.currentIndexChanged.connect(lambda i: self.order_chosen.emit(self.order.itemData(i)))
        row = QHBoxLayout()
        row.setContentsMargins(4, 0, 0, 0)  # "Next:" not flush with the dock edge
        label = QLabel("Next:")
        label.setBuddy(self.order)
        row.addWidget(label)
        row.addWidget(self.order, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(row)
        layout.addWidget(self.list, 1)

        self._rows: dict[str, int] = {}
        self._entries: dict[str, ImageEntry] = {}
        self._unsure: dict[str, float] = {}
        self._icons = {s: _dot(c) for s, c in STATUS_COLOURS.items()}
        self._error_icon = _dot(ERROR_COLOUR)
        self.list.currentItemChanged.connect(self._on_current)
        self.list.setMinimumWidth(220)
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # long file names keep their status
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def set_order(self, order: str) -> None:
        """Show the project's setting without emitting ``order_chosen``."""
        index = self.order.findData(order)
        self.order.blockSignals(True)
        self.order.setCurrentIndex(max(0, index))
        self.order.blockSignals(False)

    def set_images(self, entries: list[ImageEntry]) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        self._rows, self._entries, self._unsure = {}, {}, {}
        for row, e in enumerate(entries):
            item = QListWidgetItem()
            item.setData(Qt.ItemDataRole.UserRole, e.id)
            self.list.addItem(item)
            self._rows[e.id] = row
            self.set_status(e)
        self.list.blockSignals(False)

    def set_uncertainty(self, scores: dict[str, float]) -> None:
        """Show these images' uncertainty (higher = the model is less sure); others show none."""
        changed = set(scores) ^ set(self._unsure) | {i for i in scores if self._unsure.get(i) != scores[i]}
        self._unsure = {i: v for i, v in scores.items() if i in self._rows}
        for image_id in changed & set(self._entries):
            self.set_status(self._entries[image_id])

    def uncertainty_text(self, image_id: str) -> str:
        value = self._unsure.get(image_id)
        return "" if value is None else f"unsure {value:.2f}"

    def set_status(self, entry: ImageEntry, error: str | None = None) -> None:
        self._entries[entry.id] = entry
        item = self.list.item(self._rows[entry.id])
        name = Path(entry.source).name + (f" · frame {entry.frame + 1}" if entry.frame is not None else "")
        if error:
            item.setText(f"cannot open · {name}")
            item.setIcon(self._error_icon)
            item.setToolTip(error)
            return
        unsure = self.uncertainty_text(entry.id) if entry.status != STATUS_ACCEPTED else ""
        item.setText(f"{entry.status} · {name}" + (f" · {unsure}" if unsure else ""))
        item.setIcon(self._icons[entry.status])
        tip = f"{entry.source}\n{entry.width} x {entry.height}, {entry.status}"
        if unsure:
            tip += (f"\nthe current model's proposal: {unsure} (mean 1 - confidence where it found "
                    "something or hesitated; 0 = sure)")
        item.setToolTip(tip)

    def select(self, image_id: str) -> None:
        """Make ``image_id`` current without emitting ``image_chosen``."""
        self.list.blockSignals(True)
        self.list.setCurrentRow(self._rows[image_id])
        self.list.blockSignals(False)

    def _on_current(self, current: QListWidgetItem | None, _previous) -> None:
        if current is not None:
            self.image_chosen.emit(current.data(Qt.ItemDataRole.UserRole))
