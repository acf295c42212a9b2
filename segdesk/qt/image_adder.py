"""Adds images to the open project off the GUI thread: each file is decoded whole (to check it and
learn its size) and hashed, 4-5 s for a 20,000 x 20,000 image, which on the GUI thread froze the
window (issue 14).

The GUI thread owns the open Project (DESIGN.md "Threads"), so the adding runs on a copy of it
(Project.add_images with ``save=False``, on one plain thread of its own); the copy started with the
open project's images, so duplicates and image ids are judged as the open project would. Its
report comes back on the GUI thread, where ``Project.add_entries`` puts the new entries into the open
Project, and the project writer stores them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from segdesk.core.errors import SegdeskError
from segdesk.core.project import AddReport, ImageEntry, Project

log = logging.getLogger(__name__)


class ImageAdder(QObject):
    progress = Signal(int, int)  # files done, files in all
    # the Project the images were added for (the open one then), the AddReport of the copy
    finished = Signal(object, object)
    failed = Signal(object, str)  # that Project, the message (a SegdeskError's, as today's dialog shows)
    _relay = Signal(str, object)  # from the adding thread: the signal's name, its arguments

    def __init__(self, parent=None):
        super().__init__(parent)
        self._relay.connect(self._deliver)  # a method of this object: queued onto the GUI thread
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, project: Project, paths: list[str | Path]) -> bool:
        """Add ``paths`` (files and folders) to ``project``, answered by ``finished`` or ``failed``
        with ``progress`` before each file. False (nothing started) while an adding still runs."""
        if self.running:
            return False
        copy = Project(project.root, project.to_json())
        self._cancel = cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(project, copy, list(paths), cancel),
                                        name="segdesk-image-adder", daemon=True)
        self._thread.start()
        return True

    def cancel(self) -> None:
        """Stop after the file being read (what was added so far is reported)."""
        self._cancel.set()

    def _run(self, project: Project, copy: Project, paths: list, cancel: threading.Event) -> None:
        def progress(done: int, total: int) -> bool:
            self._emit("progress", done, total)
            return not cancel.is_set()

        try:
            report: AddReport = copy.add_images(paths, progress=progress, save=False)
        except SegdeskError as exc:
            self._emit("failed", project, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - never lose the error in the thread
            log.exception("adding images failed")
            self._emit("failed", project, f"Could not add the images: {exc}")
            return
        self._emit("finished", project, report)

    def _deliver(self, name: str, args: tuple) -> None:
        getattr(self, name).emit(*args)

    def _emit(self, name: str, *args) -> None:
        try:
            self._relay.emit(name, args)
        except RuntimeError:  # the window (and this object) went away meanwhile
            log.debug("images were being added when the window closed")
