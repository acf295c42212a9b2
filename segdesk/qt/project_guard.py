"""The window's hold on its project: the project lock (segdesk.core.project_lock) and crash clean-up.

A second window (or ``segdesk train``) on a project that is open here is refused with a message
naming who holds it. A lock left by a crashed segdesk is taken over, with a note in the status
bar. Only after the lock is held are crash temporaries removed (Project.clean_up), so opening a
project never deletes another program's write in flight.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from segdesk.core.errors import ProjectError
from segdesk.core.project import Project
from segdesk.core.project_lock import LockUnavailable, ProjectLock

log = logging.getLogger(__name__)

OWNER = "segdesk window"


class ProjectGuard(QObject):
    notice = Signal(str)  # for the status bar: a stale lock taken over, a read-only folder

    def __init__(self, parent=None):
        super().__init__(parent)
        self.lock: ProjectLock | None = None
        self.root: Path | None = None
        self._previous: ProjectLock | None = None  # the old project's, until it is saved and stopped

    def claim(self, project: Project) -> str | None:
        """Hold ``project``'s lock and clean crash leftovers; None on success, else the message to
        show (the current project and its lock stay). The previous project's lock is kept until
        ``release_previous``: its last label is saved and its workers stopped after this."""
        root = Path(project.root).resolve()
        if self.root == root:
            return None
        note = ""
        try:
            lock = ProjectLock.acquire(root, owner=OWNER)
        except LockUnavailable as exc:  # read-only medium: nothing can be written, so nobody races
            lock, note = None, f"{exc} Edits cannot be saved in this folder."
        except ProjectError as exc:
            return str(exc)
        else:
            if lock.took_over:
                note = f"Took over {root.name} from a segdesk that stopped ({lock.took_over})."
        try:
            if lock is not None:
                project.clean_up()
        except ProjectError as exc:
            lock.release()
            return str(exc)
        self.release_previous()
        self._previous = self.lock
        self.lock, self.root = lock, root
        if note:
            log.warning("%s", note)
            self.notice.emit(note)
        return None

    def release_previous(self) -> None:
        if self._previous is not None:
            self._previous.release()
        self._previous = None

    def release(self) -> None:
        self.release_previous()
        if self.lock is not None:
            self.lock.release()
        self.lock, self.root = None, None
