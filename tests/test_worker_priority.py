"""Worker threads run below the GUI thread, so a busy machine takes their time, not the window's."""

from __future__ import annotations

import os
import threading

import pytest
from PySide6.QtCore import QObject, Signal, Slot

from segdesk.qt.worker_thread import WorkerThread
from tests.test_loop_controller import make_loop, project  # noqa: F401 (fixtures)

linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="per-thread nice values are Linux's")


class _Probe(QObject):
    measured = Signal(int, int)  # native thread id, its nice value

    @Slot()
    def measure(self) -> None:
        tid = threading.get_native_id()
        self.measured.emit(tid, os.getpriority(os.PRIO_PROCESS, tid))


class _Asker(QObject):
    ask = Signal()


@linux_only
def test_worker_thread_runs_at_its_nice_value_and_the_gui_thread_does_not(qtbot):
    gui_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    probe, asker = _Probe(), _Asker()
    worker = WorkerThread(probe, "test-low", nice=7)
    asker.ask.connect(probe.measure)
    try:
        with qtbot.waitSignal(probe.measured, timeout=10_000) as blocker:
            asker.ask.emit()
        tid, nice = blocker.args
        assert tid != threading.get_native_id()  # it ran on the worker's thread
        assert nice == min(19, gui_nice + 7)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == gui_nice  # the GUI thread keeps its own
    finally:
        worker.stop()


def _thread_nice(name_prefix: str) -> list[int]:
    """Nice values of this process's threads whose OS name starts with ``name_prefix`` (Qt names a
    QThread's OS thread after its objectName, cut to 15 characters)."""
    found = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        if name.startswith(name_prefix[:15]):
            found.append(int(fields[16]))  # field 19 of stat: nice
    return found


@linux_only
def test_the_loop_proposes_below_the_gui_thread_and_relays_training_beside_it(qtbot, project, make_loop):
    """The real loop's workers: proposals below the window. Training runs in a child process below
    both (tests/test_training_worker.py); the thread that relays its reports runs at the window's
    own priority, since a relay preempted while it holds the GIL would keep the window waiting."""
    from segdesk.qt import loop_controller

    gui_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    make_loop()
    want = {"segdesk-inference": [min(19, gui_nice + loop_controller.INFERENCE_NICE)],
            "segdesk-training": [gui_nice]}
    # the OS thread is named as it starts, and lowers its priority right after: wait for both
    qtbot.waitUntil(lambda: all(_thread_nice(name) == nice for name, nice in want.items()), timeout=10_000)
    assert gui_nice < _thread_nice("segdesk-inference")[0]
