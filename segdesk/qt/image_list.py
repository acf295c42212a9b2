"""The project's image list, with each image's status visible."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QListWidget, QListWidgetItem

from segdesk.core.project import STATUS_ACCEPTED, STATUS_IN_PROGRESS, STATUS_NEW, ImageEntry

STATUS_COLOURS = {STATUS_NEW: "#8a8a8a", STATUS_IN_PROGRESS: "#e69f00", STATUS_ACCEPTED: "#2ca02c"}
ERROR_COLOUR = "#d62728"


def _dot(colour: str) -> QIcon:
    pix = QPixmap(12, 12)
    pix.fill(QColor(colour))
    return QIcon(pix)


class ImageList(QListWidget):
    """Shows ``status · name``; emits ``image_chosen(image_id)`` when the user picks one."""

    image_chosen = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: dict[str, int] = {}
        self._icons = {s: _dot(c) for s, c in STATUS_COLOURS.items()}
        self._error_icon = _dot(ERROR_COLOUR)
        self.currentItemChanged.connect(self._on_current)
        self.setMinimumWidth(220)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # long file names keep their status
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def set_images(self, entries: list[ImageEntry]) -> None:
        self.blockSignals(True)
        self.clear()
        self._rows = {}
        for row, e in enumerate(entries):
            item = QListWidgetItem()
            item.setData(Qt.ItemDataRole.UserRole, e.id)
            self.addItem(item)
            self._rows[e.id] = row
            self.set_status(e)
        self.blockSignals(False)

    def set_status(self, entry: ImageEntry, error: str | None = None) -> None:
        item = self.item(self._rows[entry.id])
        name = Path(entry.source).name + (f" · frame {entry.frame + 1}" if entry.frame is not None else "")
        if error:
            item.setText(f"cannot open · {name}")
            item.setIcon(self._error_icon)
            item.setToolTip(error)
        else:
            item.setText(f"{entry.status} · {name}")
            item.setIcon(self._icons[entry.status])
            item.setToolTip(f"{entry.source}\n{entry.width} x {entry.height}, {entry.status}")

    def select(self, image_id: str) -> None:
        """Make ``image_id`` current without emitting ``image_chosen``."""
        self.blockSignals(True)
        self.setCurrentRow(self._rows[image_id])
        self.blockSignals(False)

    def _on_current(self, current: QListWidgetItem | None, _previous) -> None:
        if current is not None:
            self.image_chosen.emit(current.data(Qt.ItemDataRole.UserRole))
