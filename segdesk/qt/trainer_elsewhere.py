"""Watches for a trainer elsewhere (``segdesk train --follow``, e.g. on a GPU server) on a timer.

While its heartbeat (segdesk.core.trainer_presence) is fresh, the loop does not start its own
trainer; its progress and checkpoints reach the loop as the local trainer's do. The heartbeat, one
small file, is read every second or so on a reader thread, never on the GUI thread: on a shared
folder whose server is slow or gone, an open() can take seconds.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from PySide6.QtCore import QObject, QTimer, Signal

from segdesk.core import trainer_presence

log = logging.getLogger(__name__)

POLL_MS = 1000


class TrainerElsewhere(QObject):
    changed = Signal(object)  # the trainer's record while it is alive, None once there is none or it went quiet
    progress = Signal(object)  # its figures, in the form of TrainingWorker.progress
    checkpoint_saved = Signal(str)
    _looked = Signal(object)  # from the reader thread: the record while alive, or None

    def __init__(self, root, parent=None, poll_ms: int = POLL_MS):
        """Reads the heartbeat once here (the project is being opened), then on the reader thread."""
        super().__init__(parent)
        self._watch = trainer_presence.PresenceWatch(root, own_pid=os.getpid(),
                                                     stale_after_s=trainer_presence.STALE_AFTER_S)
        self.alive: dict | None = None  # the live trainer's last record
        self._checkpoint: str | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segdesk-heartbeat")
        self._reading = False  # a read is on its way: a slow share does not pile them up
        self._stopped = False
        self._looked.connect(self._seen)
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self._look_later)
        self.look()

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._stopped = True
        self._timer.stop()
        self._reader.shutdown(wait=False, cancel_futures=True)  # a read still running ends unheard

    @property
    def last_seen(self) -> dict | None:
        """The last record read, alive or not (for "HOST stopped answering")."""
        return self._watch.record

    def seconds_silent(self) -> float | None:
        return self._watch.seconds_silent()

    def _look_later(self) -> None:
        if not self._reading and not self._stopped:
            self._reading = True
            self._reader.submit(self._read)

    def _read(self) -> None:
        try:
            record = self._watch.look()
        except Exception:  # noqa: BLE001 - never lose an error in the thread; the next read tries again
            log.exception("reading the trainer heartbeat failed")
            record = self.alive
        if not self._stopped:
            try:
                self._looked.emit(record)
            except RuntimeError:  # the window (and this object) went away while the read ran
                pass

    def look(self) -> None:
        """Read the heartbeat now, on this thread (unless a read is on its way)."""
        if not self._reading:
            self._seen(self._watch.look())

    def _seen(self, record: dict | None) -> None:
        self._reading = False
        if self._stopped:
            return
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
