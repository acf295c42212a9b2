"""Disk trouble: a read-only project folder, a full disk during accept and during checkpoint saves.

Tests run as root, where chmod does not stop writes, so the failures are simulated where bytes
reach the disk (storage._write_call) or where a temporary becomes the file (os.replace).
Each time: the message says what failed, edits stay in memory, nothing half-written is left, and
saving works once the disk does.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from segdesk.core import storage
from segdesk.core.errors import StorageError
from segdesk.core.project import STATUS_ACCEPTED, Project
from segdesk.ml.checkpoints import CheckpointStore
from segdesk.ml.config import TrainConfig
from segdesk.qt.main_window import MainWindow
from tests.conftest import disc_project, drag, show_window, write_disc_image

_real_write_call = storage._write_call
TINY = TrainConfig(crop_size=32, batch_size=2, base_width=4, depth=2, val_every=2, patience=1000)


@pytest.fixture
def messages(monkeypatch):
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _p, t, m, *a, **k: shown.append((t, m)))
    monkeypatch.setattr(QMessageBox, "information", lambda _p, t, m, *a, **k: shown.append((t, m)))
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.Discard)
    return shown


@pytest.fixture
def project(tmp_path) -> Project:
    p = disc_project(tmp_path, ["lesion"])
    p.settings["auto_train_after"] = 1000  # no background training in these tests
    p.save()
    return p


def _window(qtbot, tmp_path, root: Path) -> MainWindow:
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), device="cpu",
                   train_config=TINY)
    show_window(qtbot, w, active=False)
    assert w.open_project(root)
    qtbot.waitUntil(lambda: w.current is not None, timeout=20_000)  # the image is read off the GUI thread
    w.canvas.set_zoom(4.0)
    return w


def _read_only_write(fd, data):
    raise OSError(errno.EROFS, "Read-only file system")


def _temporaries(root: Path) -> list[Path]:
    return list(root.rglob(storage.TMP_PREFIX + "*"))


@pytest.mark.parametrize("how", ["write", "replace"])
def test_read_only_folder_keeps_edits_and_saves_when_writable_again(qtbot, tmp_path, project, messages,
                                                                    monkeypatch, how):
    w = _window(qtbot, tmp_path, project.root)
    image_id = w.current.image_id
    if how == "write":
        monkeypatch.setattr(storage, "_write_call", _read_only_write)
        reason = "Read-only file system"
    else:  # the temporary is written, but cannot become the file (permission denied)
        real_replace = os.replace

        def no_replace(src, dst):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(storage.os, "replace", no_replace)
        reason = "Permission denied"
    w.controller.set_value(2)
    drag(w, [(10, 10), (30, 12)])
    qtbot.waitUntil(lambda: any(reason in m for _t, m in messages), timeout=20_000)
    title, message = next((t, m) for t, m in messages if reason in m)
    assert title == "Not saved" and "Could not save" in message and image_id in message
    assert "kept in memory" in message
    painted = w.current.doc.label.copy()
    assert np.count_nonzero(painted == 2) > 20
    assert "unsaved" in w.windowTitle()
    assert not w.project.label_path(image_id).exists() and not _temporaries(project.root)

    # accept while read-only: refused with the reason (written off the GUI thread); the label and
    # status stay as they were, and the user is back on the image
    QTest.keyClick(w, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: messages[-1][0] == "Not accepted" and w.current.image_id == image_id, timeout=20_000)
    assert reason in messages[-1][1]
    assert w.current.image_id == image_id and w.project.image(image_id).status != STATUS_ACCEPTED
    assert np.array_equal(w.current.doc.label, painted)

    if how == "write":
        monkeypatch.setattr(storage, "_write_call", _real_write_call)
    else:
        monkeypatch.setattr(storage.os, "replace", real_replace)
    w.save_now()
    qtbot.waitUntil(lambda: w.project.label_path(image_id).exists(), timeout=20_000)
    assert np.array_equal(cv2.imread(str(w.project.label_path(image_id)), cv2.IMREAD_UNCHANGED), painted)
    qtbot.waitUntil(lambda: "unsaved" not in w.windowTitle(), timeout=20_000)
    with qtbot.waitSignal(w.session.image_accepted, timeout=20_000):
        QTest.keyClick(w, Qt.Key.Key_Return)
    assert Project.open(project.root, clean=False).image(image_id).status == STATUS_ACCEPTED
    w.close()
    assert not _temporaries(project.root)



def test_full_disk_while_accepting_rolls_back_and_accepts_later(qtbot, tmp_path, project, messages,
                                                                 monkeypatch):
    """The label is written but project.json is not: the image must not count as accepted, in
    memory or on disk, and time spent is not counted twice when the user accepts again."""
    w = _window(qtbot, tmp_path, project.root)
    image_id = w.current.image_id
    w.controller.set_value(2)
    drag(w, [(20, 20), (24, 24)])
    qtbot.waitUntil(lambda: w.project.image(image_id).status == "in progress", timeout=20_000)  # autosaved

    def json_full(fd, data):
        if data.startswith(b"{"):
            raise OSError(errno.ENOSPC, "No space left on device")
        _real_write_call(fd, data)

    monkeypatch.setattr(storage, "_write_call", json_full)
    QTest.keyClick(w, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: bool(messages) and messages[-1][0] == "Not accepted" and w.current.image_id == image_id,
                    timeout=20_000)
    assert messages[-1][0] == "Not accepted" and "No space left on device" in messages[-1][1]
    assert "project.json" in messages[-1][1]
    entry = w.project.image(image_id)
    assert entry.status != STATUS_ACCEPTED and entry.accepted_at is None and entry.seconds_spent == 0
    assert Project.open(project.root, clean=False).image(image_id).status != STATUS_ACCEPTED
    assert w.current.image_id == image_id and not _temporaries(project.root)

    monkeypatch.setattr(storage, "_write_call", _real_write_call)
    with qtbot.waitSignal(w.session.image_accepted, timeout=20_000):
        QTest.keyClick(w, Qt.Key.Key_Return)
    reopened = Project.open(project.root, clean=False).image(image_id)
    assert reopened.status == STATUS_ACCEPTED and 0 < reopened.seconds_spent < 60
    w.close()


def _accepted_project(tmp_path) -> Project:
    images = tmp_path / "images"
    images.mkdir()
    p = Project.create(tmp_path / "proj", ["disc"])
    truths = [write_disc_image(images / f"d{i}.png", size=(40, 40), seed=i) for i in range(2)]
    p.add_images([images])
    for entry, truth in zip(p.images, truths):
        p.accept(entry.id, truth + 1)
    return p


@pytest.mark.parametrize("what", ["weights", "metadata"])
def test_full_disk_during_checkpoint_save_leaves_no_half_checkpoint(tmp_path, monkeypatch, what,
                                                                    torch_one_thread):
    from segdesk.ml.train import Trainer

    project = _accepted_project(tmp_path)
    models = project.root / "models"
    trainer = Trainer(project.root, TINY, device="cpu")

    def full(fd, data):
        if what == "weights" or data.startswith(b"{"):
            raise OSError(errno.ENOSPC, "No space left on device")
        _real_write_call(fd, data)

    monkeypatch.setattr(storage, "_write_call", full)
    with pytest.raises(StorageError, match="No space left on device"):
        trainer.run(max_steps=2)
    assert sorted(p.name for p in models.iterdir()) == []  # no weights without metadata, no temporaries
    assert CheckpointStore(models).load_current() is None
    monkeypatch.setattr(storage, "_write_call", _real_write_call)
    trainer.run(max_steps=2)  # space is back: the same trainer saves
    checkpoint_id, _, _ = CheckpointStore(models).load_current()
    assert checkpoint_id == "0001"


def test_training_worker_reports_a_full_disk_and_stops_cleanly(tmp_path, monkeypatch, torch_one_thread):
    from segdesk.qt.training_worker import TrainingWorker

    project = _accepted_project(tmp_path)
    worker = TrainingWorker(project.root, TINY, device="cpu")
    failed, states, finished = [], [], []
    worker.failed.connect(failed.append)
    worker.state_changed.connect(states.append)
    worker.finished.connect(lambda: finished.append(True))
    monkeypatch.setattr(storage, "_write_call", lambda fd, data: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    worker.run()  # on this thread: it returns when training stops
    assert finished == [True] and states[-1] == "error"
    assert len(failed) == 1 and "No space left on device" in failed[0] and ".safetensors" in failed[0]
    assert not [p for p in (project.root / "models").iterdir()]


def test_a_torn_log_line_does_not_spoil_the_next_one(tmp_path):
    """A power cut can leave log.jsonl ending mid-line; the next event must still be a line of its own."""
    import json

    log = tmp_path / "log.jsonl"
    log.write_text('{"event": "accepted"}\n{"event": "acc')
    storage.append_line(log, json.dumps({"event": "checkpoint"}))
    lines = log.read_text().splitlines()
    assert lines[0] == '{"event": "accepted"}' and lines[1] == '{"event": "acc'
    assert json.loads(lines[2]) == {"event": "checkpoint"}
