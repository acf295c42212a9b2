"""Start a worker QObject on its own long-lived QThread, and stop it with a time-out."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, QThread

log = logging.getLogger(__name__)

# Threads that did not stop within their time-out, with their workers: kept referenced until they
# finish, because a QThread destroyed while it runs aborts the whole process ("QThread: Destroyed
# while thread is still running"), taking the user's window with it.
_stragglers: set[tuple[QThread, QObject]] = set()


def wait_for_stragglers(timeout_ms: int = 60_000) -> bool:
    """Wait for threads that outlived their window (before QApplication exits). True if none is left."""
    for entry in list(_stragglers):
        if entry[0].wait(timeout_ms):
            _stragglers.discard(entry)
    if _stragglers:
        log.error("%d worker thread(s) still running at exit", len(_stragglers))
    return not _stragglers


class WorkerThread:
    """Owns one QThread with one worker moved onto it. ``stop`` is safe to call twice."""

    def __init__(self, worker: QObject, name: str):
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName(name)
        worker.moveToThread(self.thread)
        self.thread.start()

    def stop(self, timeout_ms: int = 5000) -> bool:
        """Ask the worker to stop (``cancel`` if it has one), quit the loop, wait. True if it ended."""
        if not self.thread.isRunning():
            return True
        cancel = getattr(self.worker, "cancel", None)
        if cancel is not None:
            cancel()  # thread-safe: sets an event the worker's loop checks after every step
        self.thread.requestInterruption()
        self.thread.quit()
        ended = self.thread.wait(timeout_ms)
        if not ended:
            log.error("%s did not stop within %d ms; it is kept until it ends", self.thread.objectName(), timeout_ms)
            entry = (self.thread, self.worker)
            _stragglers.add(entry)
            self.thread.finished.connect(lambda: _stragglers.discard(entry))
        return ended
