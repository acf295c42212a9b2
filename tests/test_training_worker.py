"""The training worker on a plain thread: announced labels start a waiting worker, a cancel ends
it at once. Signals are taken directly on the worker's thread (no event loop runs here); waits are
on events and threads, never on sleeps."""

from __future__ import annotations

import signal
import threading
from dataclasses import replace

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


def _run_on_thread(worker):
    states, failed, saved = [], [], []
    seen = {s: threading.Event() for s in ("training", "saved")}
    finished = threading.Event()

    def on_state(state):
        states.append(state)
        if state == "training":
            seen["training"].set()

    def on_saved(checkpoint):
        saved.append(checkpoint)
        seen["saved"].set()

    worker.state_changed.connect(on_state, DIRECT)
    worker.failed.connect(failed.append, DIRECT)
    worker.checkpoint_saved.connect(on_saved, DIRECT)
    worker.finished.connect(finished.set, DIRECT)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread, states, failed, saved, seen, finished


def test_the_window_trains_in_a_child_process_that_saves_checkpoints_and_stops_on_cancel(tmp_path):
    """The loop's worker: training in another process (its own GIL), checkpoints and states relayed
    as the thread's were, a cancel ends the process."""
    import os

    from segdesk.ml.checkpoints import CheckpointStore
    from segdesk.qt import loop_controller

    project, _ = make_project(tmp_path, 4, size=32)
    worker = TrainingWorker(project.root, replace(TINY, val_every=5), device="cpu", child_process=True,
                            nice=loop_controller.TRAINING_NICE)
    thread, states, failed, saved, seen, finished = _run_on_thread(worker)
    assert seen["saved"].wait(120)
    child = worker._child
    assert child is not None and child.pid != os.getpid() and child.poll() is None
    if hasattr(os, "getpriority"):  # below the window, so training never takes its core
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(
            19, os.getpriority(os.PRIO_PROCESS, 0) + loop_controller.TRAINING_NICE)
    assert CheckpointStore(project.root / "models").load_current()[0] == saved[-1]
    worker.cancel()
    assert finished.wait(WAIT)
    thread.join(WAIT)
    assert child.wait(WAIT) == 0 and states[-1] == "stopped" and not failed and not thread.is_alive()


def test_on_windows_the_trainer_process_starts_below_normal_priority():
    """Windows has no nice for the child to lower itself with: it is started in the "below normal"
    priority class instead; elsewhere, and when asked for no lower priority, no flags."""
    from segdesk.qt.training_worker import priority_flags

    assert priority_flags(10, "win32") == 0x00004000  # BELOW_NORMAL_PRIORITY_CLASS
    assert priority_flags(0, "win32") == 0
    assert priority_flags(10, "linux") == 0 and priority_flags(10, "darwin") == 0


def test_a_trainer_process_that_dies_is_reported_and_the_worker_ends(tmp_path):
    """An out-of-memory kill (or any crash) in training ends the child, not the window: the worker
    says so and finishes, and Start training can go on."""
    project, _ = make_project(tmp_path, 4, size=32)
    worker = TrainingWorker(project.root, TINY, device="cpu", child_process=True)
    thread, states, failed, _saved, seen, finished = _run_on_thread(worker)
    assert seen["training"].wait(120)
    worker._child.kill()
    assert finished.wait(WAIT)
    thread.join(WAIT)
    assert states[-1] == "error" and len(failed) == 1 and "stopped unexpectedly" in failed[0]


def test_the_trainer_process_stops_when_the_window_goes_away(tmp_path):
    """The window crashed or was killed: its end of the child's stdin closes, and the child stops
    after its step instead of training on unseen."""
    import json
    import subprocess
    import sys
    from dataclasses import asdict

    project, _ = make_project(tmp_path, 4, size=32)
    child = subprocess.Popen([sys.executable, "-m", "segdesk.ml.train_process"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    child.stdin.write(json.dumps({"root": str(project.root), "device": "cpu", "config": asdict(TINY)}) + "\n")
    child.stdin.flush()
    for line in child.stdout:  # wait until it trains
        if json.loads(line).get("state") == "training":
            break
    child.stdin.close()
    assert child.wait(120) == 0
    assert json.loads(child.stdout.readlines()[-1]) == {"state": "stopped"}


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP to keep the child from obeying")
def test_a_trainer_process_that_does_not_stop_is_ended_after_its_grace(tmp_path):
    """Closing the window does not wait on a step that takes long (a slow validation, a busy
    machine): after the grace the child is ended, which its atomic writes make safe, and that
    is a stop, not an error to tell the user about."""
    project, _ = make_project(tmp_path, 4, size=32)
    worker = TrainingWorker(project.root, TINY, device="cpu", child_process=True)
    thread, states, failed, _saved, seen, finished = _run_on_thread(worker)
    assert seen["training"].wait(120)
    child = worker._child
    child.send_signal(signal.SIGSTOP)  # it cannot obey the stop now
    worker.cancel(grace_s=0.5)
    assert finished.wait(WAIT)
    thread.join(WAIT)
    assert child.returncode == -signal.SIGKILL and states[-1] == "stopped" and not failed
