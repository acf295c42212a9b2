"""The labelling loop without a window: what LoopController emits for the panels that bind to it.

Real workers on their threads (tiny models on CPU); the signals are recorded by plain slots.
"""

from __future__ import annotations

import errno
import logging

import numpy as np
import pytest

from segdesk.core import storage
from segdesk.core.project import Project
from segdesk.ml.config import TrainConfig
from segdesk.ml.states import STOPPED, WAITING
from segdesk.qt.loop_controller import LoopController, TrainingStatus
from tests.conftest import write_disc_image

TINY = TrainConfig(crop_size=32, batch_size=2, base_width=4, depth=2)


@pytest.fixture
def project(tmp_path) -> Project:
    write_disc_image(tmp_path / "a.png")
    project = Project.create(tmp_path / "proj", ["disc"])
    project.add_images([tmp_path / "a.png"])
    project.settings["auto_train_after"] = 1000  # training starts only when a test says so
    project.save()
    return project


@pytest.fixture
def make_loop(project):
    made = []

    def make() -> LoopController:
        made.append(LoopController(project, TINY, "cpu"))
        return made[-1]

    yield make
    for loop in made:
        assert loop.shutdown(60_000)


def _save_checkpoint(project: Project, seed: int) -> str:
    import torch

    from segdesk.ml.checkpoints import CheckpointStore
    from segdesk.ml.unet import UNet

    torch.manual_seed(seed)
    model = UNet(n_outputs=2, depth=2, base_width=4)
    meta = {"arch": model.arch_dict(), "classes": ["disc"], "normalisation": "percentile-0.5-99.5",
            "working_scale": 1.0, "step": 1}
    return CheckpointStore(project.root / "models").save(model.state_dict(), meta)


def test_checkpoints_the_proposing_one_and_following_the_newest_are_signalled(qtbot, project, make_loop):
    first, newest = _save_checkpoint(project, 0), _save_checkpoint(project, 1)
    loop = make_loop()
    listed, active, follow = [], [], []
    loop.checkpoints_changed.connect(listed.append)
    loop.checkpoint_changed.connect(active.append)
    loop.follow_latest_changed.connect(follow.append)

    qtbot.waitUntil(lambda: active[-1:] == [newest], timeout=120_000)  # the newest proposes at start
    assert [m["id"] for m in listed[-1]] == [first, newest] and loop.checkpoints == listed[-1]
    assert loop.active_checkpoint == newest and loop.follow_latest

    loop.use_checkpoint(first)  # rollback: the chosen one proposes, newer ones no longer replace it
    assert follow == [False] and not loop.follow_latest
    qtbot.waitUntil(lambda: active[-1:] == [first], timeout=120_000)
    loop.set_follow_latest(False)  # no change, no signal
    assert follow == [False]

    loop.set_follow_latest(True)  # following again loads the newest at once
    assert follow == [False, True]
    qtbot.waitUntil(lambda: active[-1:] == [newest], timeout=120_000)
    assert loop.active_checkpoint == newest


def test_training_status_follows_start_stop_and_finish(qtbot, make_loop):
    loop = make_loop()
    statuses = []
    loop.status_changed.connect(statuses.append)
    assert loop.status == TrainingStatus(running=False, state="not started")

    loop.start_training()
    assert statuses == [TrainingStatus(running=True, state="starting")] and loop.training_running
    loop.start_training()  # already running: nothing happens
    assert len(statuses) == 1
    qtbot.waitUntil(lambda: loop.status.state == WAITING, timeout=120_000)  # no accepted image yet

    loop.stop_training()
    assert statuses[-1] == TrainingStatus(running=True, state="stopping")
    qtbot.waitUntil(lambda: not loop.training_running, timeout=120_000)
    assert statuses[-1] == TrainingStatus(running=False, state=STOPPED)
    assert all(s.running for s in statuses[:-1])


def test_auto_start_threshold_is_saved_and_starts_training_when_reached(qtbot, project, make_loop):
    entry = project.images[0]
    project.accept(entry.id, np.ones(entry.shape, np.uint8))  # all background
    loop = make_loop()
    statuses = []
    loop.status_changed.connect(statuses.append)
    assert loop.auto_start == 1000 and not loop.training_running

    loop.set_auto_start(1)  # one image is accepted already
    assert Project.open(project.root, clean=False).settings["auto_train_after"] == 1
    assert statuses[0] == TrainingStatus(running=True, state="starting")


def test_training_panel_words_the_start_threshold(qtbot, make_loop):
    from segdesk.qt.training_panel import TrainingPanel

    panel = TrainingPanel()
    qtbot.addWidget(panel)
    assert panel.auto_start.value() == 1 and panel.auto_start.text() == "1 accepted image"
    panel.bind(make_loop())  # this project starts after 1000
    assert panel.auto_start.text() == "1000 accepted images"
    panel.auto_start.setValue(1)
    assert panel.auto_start.text() == "1 accepted image"


def test_a_setting_the_disk_refuses_is_logged_and_told_and_still_holds(qtbot, project, make_loop, monkeypatch,
                                                                      caplog):
    loop = make_loop()
    told = []
    loop.message.connect(told.append)

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "_write_call", full_disk)
    with caplog.at_level(logging.WARNING, logger="segdesk.qt.loop_controller"):
        loop.set_auto_start(7)
    assert told == ["Setting not saved: Could not save project.json in "
                    f"{project.root}: No space left on device."]
    assert "auto-start setting not saved" in caplog.text and "No space left" in caplog.text
    assert loop.auto_start == 7  # for this session


def test_the_proposal_cache_is_bounded_in_bytes_and_keeps_the_newest(qtbot, make_loop, monkeypatch):
    """Proposals of huge images are not all kept (16 of a 20,000 px image would be 6.4 GB): the oldest
    go once the cache holds more than CACHE_BYTES, the newest stays whatever its size."""
    from segdesk.qt import loop_controller

    monkeypatch.setattr(loop_controller, "CACHE_BYTES", 250)
    loop = make_loop()
    shown = []
    loop.proposal_ready.connect(lambda image_id, *_: shown.append(image_id))
    for i, side in enumerate([10, 10, 10, 30]):  # 100, 100, 100 bytes, then 900 bytes
        loop._on_prediction(i + 1, f"img{i}", np.ones((side, side), np.uint8), "0001", False)
    assert shown == ["img0", "img1", "img2", "img3"]
    assert list(loop._cache) == [("img3", False)]  # the newest alone, over the bound by itself
    loop._on_prediction(5, "img4", np.ones((10, 10), np.uint8), "0001", False)
    assert list(loop._cache) == [("img4", False)]  # 900 + 100 bytes: the older one goes
    loop._on_prediction(6, "img5", np.ones((10, 10), np.uint8), "0001", False)
    assert list(loop._cache) == [("img4", False), ("img5", False)]


def test_a_stopped_loop_lets_go_of_its_proposals(qtbot, make_loop):
    """Opening another project stops the loop: its proposals must not stay in memory until Qt and
    Python let go of the object (a 10,000 px image's stayed beside the next project's image)."""
    import weakref

    loop = make_loop()
    label = np.ones((64, 64), np.uint8)
    loop._on_prediction(1, "img0", label, "0001", False)
    kept = weakref.ref(loop._cache[("img0", False)][1]) if hasattr(label, "__weakref__") else None
    assert loop._cache
    assert loop.shutdown(5000)
    assert not loop._cache
    del label
    assert kept is None or kept() is None
