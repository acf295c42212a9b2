"""The desktop app with a trainer elsewhere: ``segdesk train --follow`` on the same project folder
(a GPU server sharing it, here another process). Real window (offscreen), real follower process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from segdesk.core import trainer_presence
from segdesk.core.project import Project
from segdesk.core.project_lock import MODELS, holder_of
from segdesk.ml.checkpoints import CheckpointStore
from segdesk.ml.config import TrainConfig
from segdesk.qt.main_window import MainWindow
from tests.conftest import show_window, write_disc_image

FOLLOWER = ["--base-width", "8", "--depth", "3", "--crop", "48", "--batch", "4", "--val-every", "8",
            "--lr", "3e-3", "--device", "cpu", "--heartbeat", "0.2"]
LOCAL = TrainConfig(crop_size=48, batch_size=4, base_width=8, depth=3, val_every=8, patience=1000, lr=3e-3)


@pytest.fixture
def messages(monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _p, t, m, *a, **k: shown.append((t, m)))
    return shown


def test_the_app_labels_while_a_follower_trains_and_takes_over_when_it_dies(qtbot, tmp_path, messages,
                                                                           monkeypatch):
    monkeypatch.setattr(trainer_presence, "STALE_AFTER_S", 3.0)  # the app's patience with silence
    images = tmp_path / "images"
    images.mkdir()
    truths = {f"disc{i}.png": write_disc_image(images / f"disc{i}.png", size=(64, 64), seed=30 + i)
              for i in range(6)}
    project = Project.create(tmp_path / "proj", ["disc"])
    project.add_images([images])
    root = project.root

    log = open(tmp_path / "follower.log", "w")  # a file, not a pipe nobody reads while it trains
    follower = subprocess.Popen(
        [sys.executable, "-m", "segdesk", "train", str(root), "--follow", *FOLLOWER],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        qtbot.waitUntil(lambda: trainer_presence.read_heartbeat(root) is not None or follower.poll() is not None,
                        timeout=120_000)
        assert follower.poll() is None, (tmp_path / "follower.log").read_text()

        w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                       train_config=LOCAL, device="cpu")
        show_window(qtbot, w)  # key presses reach only the active window
        assert w.open_project(root)
        qtbot.waitUntil(lambda: w.current is not None, timeout=20_000)  # the image is read off the GUI thread
        panel = w.training_panel
        qtbot.waitUntil(lambda: panel.state.full_text().startswith("training on "), timeout=60_000)
        assert "(CPU" in panel.state.full_text() and not panel.start_button.isEnabled()

        # the user labels and accepts; the app does not train, the follower does
        drawn = {}
        for _ in range(4):
            cur = w.current
            drawn[cur.image_id] = truths[w.project.source_path(w.project.image(cur.image_id)).name] + 1
            cur.doc.set_label(drawn[cur.image_id])
            # the next image is read, and the accept written, off the GUI thread
            with qtbot.waitSignals([w.session.image_shown, w.session.image_accepted], timeout=20_000):
                QTest.keyClick(w, Qt.Key.Key_Return)
        assert len(w.project.accepted_ids()) == 4
        assert not w.loop.training_running
        assert holder_of(root, MODELS)["pid"] == follower.pid

        # its checkpoint reaches the app's inference worker and proposes
        qtbot.waitUntil(lambda: w.loop.active_checkpoint is not None, timeout=300_000)
        meta = json.loads((root / "models" / f"{w.loop.active_checkpoint}.json").read_text())
        assert meta["host"] and meta["device"].startswith("CPU")
        # the follower exported it to ONNX: the app's CPU proposals run through ONNX Runtime, and says so
        qtbot.waitUntil(lambda: w.status.device.text().endswith("ONNX Runtime"), timeout=60_000)
        qtbot.waitUntil(lambda: panel.step.text() not in ("–", "0"), timeout=60_000)  # its progress is shown
        w.current.proposal = None
        w.segment(anyway=True)  # early models may still be learning: ask for one regardless
        qtbot.waitUntil(lambda: w.current.proposal is not None, timeout=120_000)
        assert w.current.proposal_checkpoint in [m["id"] for m in CheckpointStore(root / "models").list()]
    finally:
        follower.send_signal(signal.SIGKILL)
        follower.wait(timeout=30)
        log.close()

    # the follower is gone: the app says so and offers to train here
    qtbot.waitUntil(lambda: "stopped answering" in panel.state.full_text(), timeout=60_000)
    assert panel.start_button.isEnabled()
    for path in (root / "models").glob("*.json"):  # nothing half-written
        json.loads(path.read_text())
    for checkpoint in CheckpointStore(root / "models").list():
        CheckpointStore(root / "models").load(checkpoint["id"])
    before = {m["id"] for m in CheckpointStore(root / "models").list()}
    QTest.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.loop.training_running, timeout=20_000)
    assert holder_of(root, MODELS)["owner"] == "segdesk window"  # the dead follower's lock taken over
    qtbot.waitUntil(lambda: bool({m["id"] for m in CheckpointStore(root / "models").list()} - before),
                    timeout=300_000)
    w.close()
    assert holder_of(root, MODELS) is None
    assert not list(root.rglob(".segdesk-tmp-*"))
    assert not [m for m in messages if "error" in m[0].lower()], messages
    reopened = Project.open(root)
    for image_id, label in drawn.items():  # every accept is on disk as the user drew it
        assert np.array_equal(reopened.read_label(image_id), label)
