"""The window's process holds only what it runs: training (torchvision, the data pipeline) and the
ONNX exporter live in the trainer's own process, so the window never imports them, not at start-up
and not while it shows a proposal through ONNX Runtime (about 0.19 GB of resident memory, which a
20,000 px image needs more)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segdesk.core.project import Project
from tests.conftest import write_disc_image

REPO = Path(__file__).resolve().parents[1]
TRAINING_ONLY = ("torchvision", "onnx", "segdesk.ml.train", "segdesk.ml.data", "segdesk.ml.click_training")

# The child starts as the app does (preload_engine), opens the project in the real window, presses
# Segment once the model is loaded, and when the proposal is on screen prints where it ran and which of TRAINING_ONLY it has imported.
CHILD = r"""
import json, os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from segdesk.app import preload_engine
from segdesk.qt.main_window import MainWindow

root, out, checkpoint, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
app = QApplication([])
preload_engine()
w = MainWindow(settings=QSettings(os.path.join(out, "s.ini"), QSettings.Format.IniFormat), device="cpu")
w.show()

def report(image_id):
    print(json.dumps({"device": w.status.device.text(), "status": w.status.proposal.text(),
                      "imported": [n for n in names if n in sys.modules]}), flush=True)
    app.quit()

def segment_when_loaded():
    if w.current is not None and w.loop.active_checkpoint == checkpoint:
        QTest.keyClick(w, Qt.Key.Key_S)
    else:
        QTimer.singleShot(50, segment_when_loaded)

w.session.proposal_shown.connect(report)
w.open_project(root)
QTimer.singleShot(0, segment_when_loaded)
QTimer.singleShot(180_000, lambda: (print(json.dumps({"timeout": True}), flush=True), app.quit()))
app.exec()
"""


def test_the_window_never_imports_what_only_training_needs(tmp_path):
    import torch

    from segdesk.ml.checkpoints import CheckpointStore
    from segdesk.ml.unet import UNet

    write_disc_image(tmp_path / "a.png")
    project = Project.create(tmp_path / "proj", ["disc"])
    project.add_images([tmp_path / "a.png"])
    project.settings["auto_train_after"] = 1000  # no training: the trainer's process is not the question
    project.save()
    torch.manual_seed(0)
    model = UNet(n_outputs=2, depth=2, base_width=4)
    meta = {"arch": model.arch_dict(), "classes": ["disc"], "normalisation": "percentile-0.5-99.5",
            "working_scale": 1.0, "step": 1, "postprocess": {"version": 1, "classes": {}, "propose": True}}
    store = CheckpointStore(project.root / "models")
    checkpoint = store.save(model.state_dict(), meta, onnx_model=model.eval())
    if not store.onnx_path(checkpoint).is_file():
        pytest.skip("this install cannot export to ONNX")

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(project.root), str(tmp_path), checkpoint,
                           ",".join(TRAINING_ONLY)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    report = json.loads(lines[-1])
    assert "timeout" not in report, done.stderr[-3000:]
    assert f"proposal from model {checkpoint}" in report["status"]
    assert "ONNX Runtime" in report["device"]  # the proposal's engine ran here, exporter or not
    assert report["imported"] == []
