"""Start a worker QObject on its own long-lived QThread, and stop it with a time-out.

Workers run below the GUI thread's priority (``nice``): on a laptop whose other core is busy, the
training thread would otherwise take the GUI thread's core for a whole scheduler slice whenever
both want it, and the window would miss frames. On Linux each thread has its own nice value
(``setpriority`` on the thread id; threads it starts inherit it); elsewhere Qt's thread priority
says the same.
"""

from __future__ import annotations

import logging
import os
import threading

from PySide6.QtCore import QObject, Qt, QThread

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


def lower_priority(nice: int) -> None:
    """Lower the calling thread's priority by ``nice`` on Linux (no privilege is needed for that)."""
    if not hasattr(os, "setpriority") or not os.path.isdir("/proc/self/task"):
        return  # not Linux: a thread id is not a process id there; QThread's priority applies
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:
        log.info("thread priority not lowered: %s", exc)


class WorkerThread:
    """Owns one QThread with one worker moved onto it. ``stop`` is safe to call twice."""

    def __init__(self, worker: QObject, name: str, nice: int = 0):
        """``nice``: how far below the GUI thread this one runs (0..19, as the ``nice`` command)."""
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName(name)
        if nice > 0:  # emitted in the new thread: the connection runs there, before any event
            self.thread.started.connect(lambda: lower_priority(nice), Qt.ConnectionType.DirectConnection)
        worker.moveToThread(self.thread)
        self.thread.start(QThread.Priority.LowPriority if nice > 0 else QThread.Priority.InheritPriority)

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
