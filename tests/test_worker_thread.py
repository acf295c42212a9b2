"""A worker that misses its stop time-out must not take the process down: the QThread is kept
until it ends instead of being destroyed while it runs (which aborts)."""

from __future__ import annotations

import gc
import threading

from PySide6.QtCore import QObject, Signal, Slot

from segdesk.qt import worker_thread
from segdesk.qt.worker_thread import WorkerThread


class BusyWorker(QObject):
    """Runs one long step that ignores cancellation until the test releases it."""

    started = Signal()

    def __init__(self, release: threading.Event):
        super().__init__()
        self.release = release
        self.entered = threading.Event()

    @Slot()
    def work(self):
        self.entered.set()
        self.release.wait(60)


class Kicker(QObject):
    go = Signal()


def test_a_thread_that_misses_its_time_out_is_kept_until_it_ends(qtbot):
    release = threading.Event()
    worker = BusyWorker(release)
    owner = WorkerThread(worker, "segdesk-test-busy")
    kicker = Kicker()
    kicker.go.connect(worker.work)
    kicker.go.emit()
    assert worker.entered.wait(30)
    thread = owner.thread
    assert owner.stop(timeout_ms=10) is False  # still in its step
    assert any(t is thread for t, _ in worker_thread._stragglers)
    del owner, worker, kicker, thread
    gc.collect()  # the window's references are gone; the thread must survive this
    release.set()
    assert worker_thread.wait_for_stragglers(30_000)
    assert not worker_thread._stragglers
