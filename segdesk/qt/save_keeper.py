"""Keeps every label edit until the disk has it: autosave, retries, and unsaved documents in memory.

Label files are written by the Autosaver thread; the image status in project.json is updated here on
the GUI thread when a write is confirmed. A failed write (full disk, read-only or deleted folder)
keeps the document in memory and retries every few seconds; nothing is dropped while the app runs.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, QTimer, Signal

from segdesk.core.errors import SegdeskError
from segdesk.core.label_document import LabelDocument
from segdesk.core.project import Project
from segdesk.qt.autosave import Autosaver

log = logging.getLogger(__name__)

RETRY_MS = 5000


class SaveKeeper(QObject):
    status_text = Signal(str)  # "All changes saved", "Saving…", "Not saved: …"
    first_failure = Signal(str)  # the first failure of a streak, for a dialog
    label_stored = Signal(str)  # image id whose label reached the disk
    unsaved_changed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.project: Project | None = None
        self._autosaver = Autosaver(self)
        self._autosaver.saved.connect(self._on_saved)
        self._autosaver.failed.connect(self._on_failed)
        self._unsaved: dict[str, LabelDocument] = {}
        self._open: tuple[str, LabelDocument] | None = None
        self.error: str | None = None
        self._retry = QTimer(self, interval=RETRY_MS)
        self._retry.timeout.connect(self.save_all)
        self._shut_down = False

    def set_project(self, project: Project) -> None:
        self.flush()
        self.project = project
        self._unsaved.clear()
        self._open = None

    # ----- the open document

    def opened(self, image_id: str, doc: LabelDocument, on_disk: bool) -> None:
        """``doc`` is now edited; ``on_disk`` says whether its current version is what the disk holds."""
        self._open = (image_id, doc)
        if on_disk:
            self._autosaver.mark_saved(image_id, doc.version)

    def take_unsaved(self, image_id: str) -> LabelDocument | None:
        return self._unsaved.pop(image_id, None)

    def keep_unsaved(self, image_id: str, doc: LabelDocument) -> None:
        """Hold ``doc`` again (taken for a switch the user called off) until the disk has it."""
        if not self._is_saved(image_id, doc):
            self._unsaved[image_id] = doc

    def edited(self) -> None:
        if self._open is not None:
            self._submit(*self._open)
            self.status_text.emit("Saving…")

    def mark_saved(self, image_id: str, doc: LabelDocument) -> None:
        """The label was written synchronously (accept)."""
        self._autosaver.mark_saved(image_id, doc.version)
        self._unsaved.pop(image_id, None)

    def close(self) -> None:
        """Save the open document, waiting a frame at most (an image switch); keep it in memory
        until the disk has it."""
        if self._open is None:
            return
        image_id, doc = self._open
        self._submit(image_id, doc)
        self._autosaver.settle()
        if not self._is_saved(image_id, doc):
            self._unsaved[image_id] = doc
        self._open = None

    # ----- saving

    def _submit(self, image_id: str, doc: LabelDocument) -> None:
        if self._shut_down:
            return  # the window has closed; what could not be saved was offered to the user then
        if self.project is not None and not self._is_saved(image_id, doc):
            self._autosaver.submit(image_id, self.project.label_path(image_id), doc.label.copy(), doc.version)

    def _is_saved(self, image_id: str, doc: LabelDocument) -> bool:
        return self._autosaver.saved_version(image_id) == doc.version

    def flush(self) -> None:
        self._autosaver.flush()

    def save_all(self) -> None:
        for image_id, doc in list(self._unsaved.items()):
            self._submit(image_id, doc)
        if self._open is not None:
            self._submit(*self._open)

    def unsaved_ids(self) -> list[str]:
        """Images whose newest edits are not on disk (after a flush)."""
        ids = [i for i, d in self._unsaved.items() if not self._is_saved(i, d)]
        if self._open is not None and not self._is_saved(*self._open):
            ids.append(self._open[0])
        return ids

    def _on_saved(self, image_id: str, version: int, painted: bool, has_unlabelled: bool) -> None:
        doc = self._unsaved.get(image_id)
        if doc is not None and doc.version == version:
            del self._unsaved[image_id]
        # an older write's report, delivered after a newer version was stored (an accept marks its
        # own): the newer one's status stands (this one would turn an accepted image "in progress")
        if self._autosaver.saved_version(image_id) == version:
            try:
                self.project.label_saved(image_id, painted, has_unlabelled)
            except SegdeskError as exc:
                self._on_failed(image_id, version, str(exc))
                return
            self.label_stored.emit(image_id)
        if not self.unsaved_ids():
            if self.error is not None:
                self.error = None
                self.unsaved_changed.emit(False)
            self._retry.stop()
        self.status_text.emit(f"Not saved: {self.error}" if self.error else "All changes saved")

    def _on_failed(self, image_id: str, version: int, message: str) -> None:
        first = self.error is None
        self.error = message
        if not self._shut_down:  # a failure queued before shut-down: no more retries after it
            self._retry.start()
        self.status_text.emit(f"Not saved: {message}")
        if first:
            self.unsaved_changed.emit(True)
            self.first_failure.emit(message)

    def shutdown(self) -> None:
        self._shut_down = True
        self._retry.stop()
        self._autosaver.shutdown()
