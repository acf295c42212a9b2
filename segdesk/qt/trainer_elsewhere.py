"""Watches for a trainer elsewhere (``segdesk train --follow``, e.g. on a GPU server) on a timer.

While its heartbeat (segdesk.core.trainer_presence) is fresh, the loop does not start its own
trainer; its progress and checkpoints reach the loop as the local trainer's do. Reading the
heartbeat is one small file every second or so.
"""

from __future__ import annotations

import logging
import os

from PySide6.QtCore import QObject, QTimer, Signal

from segdesk.core import trainer_presence

log = logging.getLogger(__name__)

POLL_MS = 1000


class TrainerElsewhere(QObject):
    changed = Signal(object)  # the trainer's record while it is alive, None once there is none or it went quiet
    progress = Signal(object)  # its figures, in the form of TrainingWorker.progress
    checkpoint_saved = Signal(str)

    def __init__(self, root, parent=None, poll_ms: int = POLL_MS):
        super().__init__(parent)
        self._watch = trainer_presence.PresenceWatch(root, own_pid=os.getpid(),
                                                     stale_after_s=trainer_presence.STALE_AFTER_S)
        self.alive: dict | None = None  # the live trainer's last record
        self._checkpoint: str | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.look)
        self.look()

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    @property
    def last_seen(self) -> dict | None:
        """The last record read, alive or not (for "HOST stopped answering")."""
        return self._watch.record

    def seconds_silent(self) -> float | None:
        return self._watch.seconds_silent()

    def look(self) -> None:
        record = self._watch.look()
        was = self.alive
        self.alive = record
        if record is not None and record != was:
            checkpoint = record.get("checkpoint")
            if checkpoint and checkpoint != self._checkpoint:
                first = self._checkpoint is None and was is None
                self._checkpoint = checkpoint
                if not first:
                    self.checkpoint_saved.emit(checkpoint)
            self.progress.emit(dict(record))
        if (record is None) != (was is None) or (record and was and record.get("host") != was.get("host")):
            if record is None and was is not None:
                log.info("the trainer on %s stopped answering", was.get("host"))
            self.changed.emit(record)
