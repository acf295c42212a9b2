"""Keeps every label edit until the disk has it: autosave, accepts, retries, unsaved documents in memory.

Every write goes through the project writer (segdesk.qt.project_writer), in order, off the GUI
thread; its reports carry the image's entry as the disk has it, copied here into the window's
Project. A failed write (full disk, read-only or deleted folder) keeps the document in memory and
retries every few seconds; nothing is dropped while the app runs. An accept is reported
(``accepted``) only once its label file and project.json are on disk.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from segdesk.core.errors import SegdeskError
from segdesk.core.label_document import LabelDocument
from segdesk.core.project import ImageEntry, Project
from segdesk.qt.project_writer import CLOSE_S, ProjectWriter, mirror

log = logging.getLogger(__name__)

RETRY_MS = 5000
# Labels with more pixels are saved as patches: the writer keeps a copy, each save sends the box that
# changed (a whole copy of a 20,000 px label is 400 MB and ~0.3-1 s of the GUI thread per stroke).
PATCH_PIXELS = 2048 * 2048


class SaveKeeper(QObject):
    status_text = Signal(str)  # "All changes saved", "Saving…", "Not saved: …"
    first_failure = Signal(str)  # the first failure of a streak, for a dialog
    label_stored = Signal(str)  # image id whose label reached the disk (not by an accept)
    unsaved_changed = Signal(bool)
    accepted = Signal(str, object)  # image id, the stored label: the accept is on disk
    accept_failed = Signal(str, str)  # image id, message: not accepted, the label is kept in memory

    def __init__(self, parent=None):
        super().__init__(parent)
        self.project: Project | None = None
        self.writer = ProjectWriter(self)
        self.writer.label_written.connect(self._on_saved)
        self.writer.label_failed.connect(self._on_failed)
        self.writer.accepted.connect(self._on_accepted)
        self.writer.accept_failed.connect(self._on_accept_failed)
        self.writer.project_failed.connect(self._on_project_failed)
        self._unsaved: dict[str, LabelDocument] = {}
        self._open: tuple[str, LabelDocument] | None = None
        self._accepts: dict[str, LabelDocument] = {}  # image id -> document whose accept is on its way
        self._merged_by_writer: set[str] = set()  # those accepts the writer merges from its kept copy
        # the large label whose copy the writer keeps (patches change it): its document and image
        self._kept_doc: LabelDocument | None = None
        self._kept_id: str | None = None
        self._setting_failed: dict[str, Callable[[str], None]] = {}  # key -> who is told of a refusal
        self.error: str | None = None
        self._retry = QTimer(self, interval=RETRY_MS)
        self._retry.timeout.connect(self.save_all)
        self._shut_down = False

    def set_project(self, project: Project) -> None:
        self.flush()
        self.project = project
        self.writer.set_project(project)
        self._unsaved.clear()
        self._accepts.clear()
        self._merged_by_writer.clear()
        self._open = None
        self._kept_doc = self._kept_id = None

    # ----- the open document

    def opened(self, image_id: str, doc: LabelDocument, on_disk: bool) -> None:
        """``doc`` is now edited; ``on_disk`` says whether its current version is what the disk holds."""
        self._open = (image_id, doc)
        if on_disk:
            self.writer.mark_saved(image_id, doc.version)
            if doc.label.size > PATCH_PIXELS:  # the writer reads its copy from the disk: none made here
                doc.take_changed()
                self._kept_doc, self._kept_id = doc, image_id
                self.writer.keep_from_disk(image_id, doc.shape)

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

    def close(self) -> None:
        """Hand the open document to the writer (an image switch; nothing waits) and keep it in
        memory until the disk has it."""
        if self._open is None:
            return
        image_id, doc = self._open
        self._submit(image_id, doc)
        if not self._is_saved(image_id, doc):
            self._unsaved[image_id] = doc
        self._open = None

    # ----- accept

    def merges_accept(self, doc: LabelDocument) -> bool:
        """Whether ``accept`` of ``doc`` takes no merged label: a large label (over PATCH_PIXELS),
        of which the writer keeps a copy and merges that, off the GUI thread."""
        return doc.label.size > PATCH_PIXELS

    def accept(self, image_id: str, doc: LabelDocument, label: np.ndarray | None, seconds: float,
               checkpoint: str | None, proposal: np.ndarray | None = None) -> None:
        """Store ``label`` (``doc``'s label with unlabelled pixels made background) as accepted; the
        answer is ``accepted`` or ``accept_failed``. Nothing waits for the disk. ``label`` None (when
        ``merges_accept``): the writer merges its copy of ``doc``'s label with ``proposal``, written
        into ``proposal`` (given away: where it is still held, it then shows the accepted label), and
        ``doc`` adopts the writer's stored array once it is on disk."""
        if self._shut_down or self.project is None:
            return
        self._accepts[image_id] = doc
        self._merged_by_writer.discard(image_id)
        if label is not None:
            self.writer.accept(image_id, label, doc.version, seconds, checkpoint)
        else:
            self._merged_by_writer.add(image_id)
            box = doc.take_changed()
            values = None
            if self._kept_doc is doc and self._kept_id == image_id:  # the writer has it but for the box
                if box is not None:
                    y0, x0, y1, x1 = box
                    values = doc.label[y0:y1, x0:x1].copy()
            else:  # a document the writer keeps no copy of (one held while its writes failed): once
                self._kept_doc, self._kept_id = doc, image_id
                self.writer.keep_label(image_id, doc.label.copy())
                box = None
            self.writer.accept_kept(image_id, box, values, doc.version, seconds, checkpoint, proposal)
        self.status_text.emit("Saving…")

    def accepting(self) -> list[str]:
        """Images whose accept is on its way to the disk."""
        return list(self._accepts)

    def _on_accepted(self, image_id: str, version: int, fields: dict, stored: np.ndarray) -> None:
        doc = self._accepts.pop(image_id, None)
        by_writer = image_id in self._merged_by_writer
        self._merged_by_writer.discard(image_id)
        if self.project is None or doc is None:
            return  # another project was opened meanwhile
        mirror(self.project, image_id, fields)
        if doc.version == version:  # not edited since: it shows what is stored
            if by_writer:  # the writer's array, no copy here; the writer then keeps only the stored file
                doc.adopt(stored)
                self.writer.adopt_accepted(image_id, version)
            else:
                doc.set_label(stored)
            self.writer.mark_saved(image_id, doc.version)
        self._forget_if_saved(image_id, doc)
        self.accepted.emit(image_id, stored)
        self._report()

    def _on_accept_failed(self, image_id: str, version: int, message: str) -> None:
        doc = self._accepts.pop(image_id, None)
        self._merged_by_writer.discard(image_id)
        if doc is not None and not self._is_saved(image_id, doc):
            self._submit(image_id, doc)  # as a label, so that the edits are not lost
        self._report()  # first: a switch back to the image takes its document out of the keeper
        self.accept_failed.emit(image_id, message)

    # ----- settings and new images

    def save_setting(self, key: str, value, failed: Callable[[str], None] | None = None) -> None:
        """Store a project setting (already set in the window's Project); ``failed(message)`` is
        called if the disk refuses it."""
        if failed is not None:
            self._setting_failed[key] = failed
        self.writer.set_setting(key, value)

    def images_added(self, entries: list[ImageEntry]) -> None:
        """The window's Project added these images (``Project.add_images(..., save=False)``)."""
        if entries:
            self.writer.add_images(entries)

    def _on_project_failed(self, key: str, message: str) -> None:
        told = self._setting_failed.get(key)
        if told is not None:
            told(message)
        else:
            self.status_text.emit(message)

    # ----- saving

    def _submit(self, image_id: str, doc: LabelDocument) -> None:
        if self._shut_down:
            return  # the window has closed; what could not be saved was offered to the user then
        if self.project is None or self._is_saved(image_id, doc) or self.writer.accepting(image_id) == doc.version:
            return  # on disk already, or its accept writes it
        if doc.label.size <= PATCH_PIXELS:
            self.writer.write_label(image_id, doc.label.copy(), doc.version)
            return
        # a large label: the writer keeps a copy, and gets only the box that changed since
        box = doc.take_changed()
        if self._kept_doc is doc and self._kept_id == image_id and box is not None:
            y0, x0, y1, x1 = box
            self.writer.write_label_patch(image_id, box, doc.label[y0:y1, x0:x1].copy(), doc.version)
        else:
            self._kept_doc, self._kept_id = doc, image_id
            self.writer.write_label(image_id, doc.label.copy(), doc.version, keep=True)

    def _is_saved(self, image_id: str, doc: LabelDocument) -> bool:
        return self.writer.saved_version(image_id) == doc.version

    def _forget_if_saved(self, image_id: str, doc: LabelDocument) -> None:
        held = self._unsaved.get(image_id)
        if held is not None and held is doc and self._is_saved(image_id, doc):
            del self._unsaved[image_id]

    def flush(self, timeout: float = CLOSE_S) -> bool:
        """Wait (at most ``timeout`` seconds) for every write handed to the writer; False, with
        ``error`` saying so, when the disk did not answer in time."""
        if self.writer.flush(timeout):
            return True
        self.error = f"the disk did not answer within {timeout:.0f} s"
        return False

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

    def _on_saved(self, image_id: str, version: int, fields: dict) -> None:
        doc = self._unsaved.get(image_id)
        if doc is not None and doc.version == version:
            del self._unsaved[image_id]
        if self.project is not None:
            try:
                mirror(self.project, image_id, fields)  # reports come in the writer's order
            except SegdeskError:  # an image of the project opened before
                return
        if self.writer.saved_version(image_id) == version:
            self.label_stored.emit(image_id)
        self._report()

    def _report(self) -> None:
        if not self.unsaved_ids() and not self._accepts:
            if self.error is not None:
                self.error = None
                self.unsaved_changed.emit(False)
            self._retry.stop()
        if self._accepts or self.writer.pending():
            self.status_text.emit("Saving…")
        else:
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
        """The window closes: it has flushed (and asked the user about what could not be saved);
        a write still running ends on its own."""
        self._shut_down = True
        self._retry.stop()
        self.writer.shutdown(timeout=1.0)
