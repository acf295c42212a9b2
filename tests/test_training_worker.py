"""The training worker on a plain thread: announced labels start a waiting worker, a cancel ends
it at once. Signals are taken directly on the worker's thread (no event loop runs here); waits are
on events and threads, never on sleeps."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import Qt

from segdesk.ml import train
from segdesk.ml.config import TrainConfig
from segdesk.ml.gate import TrainingGate
from segdesk.qt.training_worker import TrainingWorker
from tests.synthetic import make_project

pytestmark = pytest.mark.usefixtures("torch_one_thread")

DIRECT = Qt.ConnectionType.DirectConnection
TINY = TrainConfig(crop_size=32, batch_size=2, depth=2, base_width=4, val_every=50)
WAIT = 30  # seconds; a bound on a hang, never reached when it works


def test_announced_labels_start_a_waiting_worker_and_cancel_ends_it(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "_LABEL_CHECK_S", 3600.0)  # only the announcement can wake it
    project, truths = make_project(tmp_path, 2, size=32, accept=False)
    gate = TrainingGate()
    worker = TrainingWorker(project.root, TINY, device="cpu", gate=gate)
    states, seen = [], {state: threading.Event() for state in ("waiting for labels", "training")}

    def on_state(state):
        states.append(state)
        if state in seen:
            seen[state].set()

    finished = threading.Event()
    worker.state_changed.connect(on_state, DIRECT)
    worker.finished.connect(finished.set, DIRECT)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert seen["waiting for labels"].wait(WAIT)
    image_id = next(iter(truths))
    project.accept(image_id, truths[image_id] + 1)
    worker.labels_changed()
    assert seen["training"].wait(WAIT)
    worker.cancel()
    assert finished.wait(WAIT)
    thread.join(WAIT)
    assert states[-1] == "stopped" and not thread.is_alive()


def test_cancel_ends_a_worker_waiting_for_labels(tmp_path):
    project, _ = make_project(tmp_path, 1, size=32, accept=False)
    worker = TrainingWorker(project.root, TINY, device="cpu")
    waiting, finished = threading.Event(), threading.Event()
    worker.state_changed.connect(lambda s: s == "waiting for labels" and waiting.set(), DIRECT)
    worker.finished.connect(finished.set, DIRECT)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert waiting.wait(WAIT)
    worker.cancel()
    assert finished.wait(WAIT)
    thread.join(WAIT)
    assert not thread.is_alive()


def test_a_cancel_before_the_run_begins_ends_that_run(tmp_path):
    """Start then Stop (or close) before the queued run reaches the worker's thread: the run must
    end at once, not clear the stop and train on (a thread nobody can stop)."""
    project, _ = make_project(tmp_path, 4, size=32)
    worker = TrainingWorker(project.root, TINY, device="cpu")
    states, finished = [], threading.Event()
    worker.state_changed.connect(states.append, DIRECT)
    worker.finished.connect(finished.set, DIRECT)
    worker.arm()  # the loop arms the worker when it queues the run...
    worker.cancel()  # ...and the user stops before the run begins
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert finished.wait(WAIT)
    thread.join(WAIT)
    assert not thread.is_alive() and "training" not in states
