"""Model versions: the checkpoints with time, validation Dice and labels used; choose which proposes.
It shows the checkpoints of the loop it is bound to."""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QHeaderView, QPushButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout,
                               QWidget)

from segdesk.ml import postprocess
from segdesk.qt.loop_controller import LoopController


class ModelsPanel(QWidget):
    use_requested = Signal(str)  # checkpoint id chosen by the user (rollback)
    follow_latest_changed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Model", "Saved", "Dice", "Labels"])
        for col, tip in enumerate(("Checkpoint, and which one proposes", "Time it was saved",
                                   "Validation Dice on held-out labelled images (1 = perfect)",
                                   "Labelled images it was trained on")):
            self.tree.headerItem().setToolTip(col, tip)
        self.tree.setRootIsDecorated(False)
        self.tree.header().setStretchLastSection(False)
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemDoubleClicked.connect(lambda item, _col: self._use(item))
        layout.addWidget(self.tree)
        self.use_button = QPushButton("Use selected model for proposals")
        self.use_button.clicked.connect(lambda: self._use(self.tree.currentItem()))
        layout.addWidget(self.use_button)
        self.follow = QCheckBox("Always use the newest model")
        self.follow.setChecked(True)
        self.follow.toggled.connect(self.follow_latest_changed.emit)
        layout.addWidget(self.follow)
        self._metas: list[dict] = []
        self._active: str | None = None
        self._bound: list = []  # connections to the loop shown

    def bind(self, loop: LoopController) -> None:
        """Show ``loop``'s checkpoints and send the user's choices to it; a previous loop is let go."""
        for connection in self._bound:
            QObject.disconnect(connection)
        self._bound = [
            loop.checkpoints_changed.connect(self._show_checkpoints),
            loop.checkpoint_changed.connect(self._show_active),
            loop.follow_latest_changed.connect(self._show_follow_latest),
            self.use_requested.connect(loop.use_checkpoint),
            self.follow_latest_changed.connect(loop.set_follow_latest),
        ]
        self._show_follow_latest(loop.follow_latest)
        self.set_checkpoints(loop.checkpoints, loop.active_checkpoint)

    def _show_checkpoints(self, metas: list[dict]) -> None:
        self.set_checkpoints(metas, self._active)

    def _show_active(self, checkpoint_id: str) -> None:
        self.set_checkpoints(self._metas, checkpoint_id)

    def _show_follow_latest(self, on: bool) -> None:
        self.follow.blockSignals(True)
        self.follow.setChecked(on)
        self.follow.blockSignals(False)

    def set_checkpoints(self, metas: list[dict], active: str | None) -> None:
        self._metas, self._active = metas, active
        self.tree.clear()
        for meta in reversed(metas):  # newest first
            dice = meta.get("val_dice")
            withholds = postprocess.withholds(meta.get("postprocess"))
            item = QTreeWidgetItem([
                meta["id"] + _state(meta["id"] == active, withholds),
                time.strftime("%H:%M:%S", time.localtime(meta.get("created", 0))),
                "–" if dice is None else f"{dice:.3f}",
                str(meta.get("n_train_images", "–")),
            ])
            item.setData(0, Qt.ItemDataRole.UserRole, meta["id"])
            if withholds:
                item.setToolTip(0, "Still learning: its proposals took more correcting than drawing on the "
                                   "held-out images, so it shows none.")
            self.tree.addTopLevelItem(item)
        self.tree.setMinimumWidth(self._full_width())

    def _full_width(self) -> int:
        """Width that shows every column whole, so the dock grows rather than cut a column off."""
        tree = self.tree
        columns = sum(max(tree.sizeHintForColumn(c), tree.header().sectionSizeHint(c))
                      for c in range(tree.columnCount()))
        return columns + 2 * tree.frameWidth() + tree.verticalScrollBar().sizeHint().width()

    def _use(self, item: QTreeWidgetItem | None) -> None:
        if item is not None:
            self.use_requested.emit(item.data(0, Qt.ItemDataRole.UserRole))  # the loop stops following the newest


def _state(active: bool, withholds: bool) -> str:
    if active:
        return "  ◀ learning" if withholds else "  ◀ proposing"
    return "  (learning)" if withholds else ""
