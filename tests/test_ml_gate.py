"""The training gate: announced labels and a stop wake a waiting trainer at once, and training pauses
while a proposal runs. Every wait here is on an event or a thread, none on a sleep; the trainer's
own look at the disk is pushed out of reach so only the announcement can wake it."""

from __future__ import annotations

import threading

import pytest

from segdesk.ml import train
from segdesk.ml.config import TrainConfig
from segdesk.ml.gate import TrainingGate
from segdesk.ml.train import Trainer
from tests.synthetic import make_project

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = dict(crop_size=32, batch_size=2, depth=2, base_width=4, val_every=50)
WAIT = 30  # seconds; a bound on a hang, never reached when it works


class WatchedGate(TrainingGate):
    """Says when the trainer starts to wait for labels or for a proposal."""

    def __init__(self):
        super().__init__()
        self.waiting_for_labels = threading.Event()
        self.waiting_for_proposal = threading.Event()

    def wait_for_labels(self, timeout=None):
        self.waiting_for_labels.set()
        return super().wait_for_labels(timeout)

    def wait_while_proposing(self, timeout):
        if self._proposals:
            self.waiting_for_proposal.set()
        super().wait_while_proposing(timeout)


def in_thread(fn):
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return thread, result


@pytest.fixture
def no_disk_checks(monkeypatch):
    monkeypatch.setattr(train, "_LABEL_CHECK_S", 3600.0)


def test_an_announcement_made_before_the_wait_counts_once():
    gate = TrainingGate()
    gate.announce_labels()
    assert gate.wait_for_labels(timeout=0)
    assert not gate.wait_for_labels(timeout=0)  # taken


def test_a_stop_opens_every_wait_until_cleared():
    gate = TrainingGate()
    gate.stop()
    gate.announce_labels()
    assert gate.stopped and not gate.wait_for_labels()  # no timeout: returns at once
    with gate.proposing():
        gate.wait_while_proposing(timeout=WAIT * 10)  # returns at once
    gate.clear_stop()
    assert not gate.stopped and gate.wait_for_labels(timeout=0)  # the announcement was kept


def test_a_proposal_holds_the_waiter_until_it_ends():
    gate = TrainingGate()
    started, ended = threading.Event(), threading.Event()

    def waiter():
        started.set()
        gate.wait_while_proposing(WAIT)
        ended.set()

    with gate.proposing():
        thread, _ = in_thread(waiter)
        assert started.wait(WAIT)
        assert not ended.is_set()  # it cannot pass while the proposal runs
    thread.join(WAIT)
    assert ended.is_set()


def test_announced_labels_wake_a_waiting_trainer(tmp_path, no_disk_checks):
    project, truths = make_project(tmp_path, 2, size=32, accept=False)
    gate = WatchedGate()
    trainer = Trainer(project.root, TrainConfig(**TINY), device="cpu", gate=gate)
    assert not trainer.has_data
    thread, woke = in_thread(trainer.wait_for_labels)
    assert gate.waiting_for_labels.wait(WAIT)
    image_id = next(iter(truths))
    project.accept(image_id, truths[image_id] + 1)
    gate.announce_labels()
    thread.join(WAIT)
    assert woke == [True] and trainer.has_data


def test_a_stop_wakes_a_trainer_waiting_for_labels(tmp_path, no_disk_checks):
    project, _ = make_project(tmp_path, 2, size=32, accept=False)
    gate = WatchedGate()
    trainer = Trainer(project.root, TrainConfig(**TINY), device="cpu", gate=gate)
    thread, result = in_thread(trainer.run)  # open-ended: it waits for labels
    assert gate.waiting_for_labels.wait(WAIT)
    gate.stop()
    thread.join(WAIT)
    assert [p.state for p in result] == ["stopped"]


def test_training_pauses_while_a_proposal_runs_and_resumes_after(tmp_path):
    project, _ = make_project(tmp_path, 2, size=32)
    gate = WatchedGate()
    trainer = Trainer(project.root, TrainConfig(**TINY), device="cpu", gate=gate)
    with gate.proposing():
        thread, result = in_thread(lambda: trainer.run(max_steps=2))
        assert gate.waiting_for_proposal.wait(WAIT)
        assert trainer.step_count == 0 and thread.is_alive()
    thread.join(WAIT * 4)
    assert trainer.step_count == 2 and result[0].state == "stopped"


def test_a_stuck_proposal_pauses_training_no_longer_than_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "MAX_YIELD_S", 0.0)
    project, _ = make_project(tmp_path, 2, size=32)
    trainer = Trainer(project.root, TrainConfig(**TINY), device="cpu")
    with trainer.gate.proposing():  # never ends while training runs
        assert trainer.run(max_steps=2).step == 2


def test_a_forwarding_gate_brings_the_other_gate_up_to_date_and_relays_in_order():
    """The window's gate tells a trainer process's gate everything, from the state it is in when the
    forwarding begins: a proposal already running holds the other side's training too."""
    here, there, sent = TrainingGate(), TrainingGate(), []

    def send(command):
        sent.append(command)
        there.obey(command)

    with here.proposing():
        here.forward(send)
        assert there._proposals == 1  # the running proposal reached the other gate
        here.announce_labels()
    assert sent == ["proposing", "labels", "proposed"] and there._proposals == 0
    assert there.wait_for_labels(0)  # taken there, once
    here.stop()
    assert there.stopped
    here.forward(None)
    here.clear_stop()
    here.announce_labels()
    assert sent[-1] == "stop" and there.stopped  # nothing after the forwarding ended

    late = TrainingGate()
    here.stop()
    here.forward(late.obey)  # a stop asked before the forwarding began still reaches the process
    assert late.stopped
