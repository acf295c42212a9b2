"""Model files from outside: pickles, other classes, other architectures, damaged files.

Each is refused with a clear message, nothing in it runs, and the model that proposed before keeps
proposing: in the checkpoint store, in the inference worker (the GUI path), in the loop controller's
message, and in the trainer (which starts fresh rather than from a bad file).
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox
from safetensors.torch import save as save_safetensors

from segdesk.core.errors import CheckpointError
from segdesk.core.project import Project
from segdesk.ml.checkpoints import CheckpointStore, check_compatible
from segdesk.ml.config import TrainConfig
from segdesk.ml.inference import Predictor
from segdesk.ml.train import Trainer
from segdesk.ml.unet import UNet
from segdesk.qt.inference_worker import InferenceWorker
from tests.conftest import write_disc_image

pytestmark = pytest.mark.usefixtures("torch_one_thread")


class MakesMarker:
    """A pickle payload that creates a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _meta(model: UNet, classes=("disc",)) -> dict:
    return {"arch": model.arch_dict(), "classes": list(classes), "normalisation": "percentile-0.5-99.5",
            "working_scale": 1.0, "step": 1}


def _good(models: Path) -> str:
    torch.manual_seed(0)
    model = UNet(n_outputs=2, depth=2, base_width=4)
    return CheckpointStore(models).save(model.state_dict(), _meta(model))


def _plant(models: Path, data: bytes, meta: dict) -> str:
    """A complete-looking checkpoint (weights + metadata) written by someone else."""
    store = CheckpointStore(models)
    checkpoint_id = store._next_id()
    (models / f"{checkpoint_id}.safetensors").write_bytes(data)
    (models / f"{checkpoint_id}.json").write_text(json.dumps({**meta, "id": checkpoint_id}))
    return checkpoint_id


def _bad_checkpoints(models: Path, marker: Path) -> dict[str, tuple[str, str]]:
    """name -> (checkpoint id, words the refusal must contain)."""
    small = UNet(n_outputs=2, depth=2, base_width=4)
    out = {}
    for protocol, words in ((0, "not a readable safetensors"), (pickle.HIGHEST_PROTOCOL, "pickle payload")):
        out[f"pickle{protocol}"] = (_plant(models, pickle.dumps(MakesMarker(marker), protocol=protocol),
                                           _meta(small)), words)
    torch_file = models / "torch.tmp"
    torch.save({"x": MakesMarker(marker)}, torch_file)
    out["torch.save"] = (_plant(models, torch_file.read_bytes(), _meta(small)), "pickle")
    torch_file.unlink()
    four = UNet(n_outputs=4, depth=2, base_width=4)
    out["other classes"] = (_plant(models, save_safetensors(four.state_dict()), _meta(four, "abc")),
                            "trained for 3 classes; this project has 1")
    wide = UNet(n_outputs=2, depth=3, base_width=8)  # weights of another U-Net under our metadata
    out["other architecture weights"] = (_plant(models, save_safetensors(wide.state_dict()), _meta(small)),
                                         "does not fit")
    out["other architecture name"] = (
        _plant(models, save_safetensors(small.state_dict()), {**_meta(small), "arch": {"name": "resnet50"}}),
        "architecture")
    out["huge architecture"] = (
        _plant(models, save_safetensors(small.state_dict()),
               {**_meta(small), "arch": {**small.arch_dict(), "depth": 10**9, "base_width": 4096}}),
        "Implausible")
    out["infinite size"] = (
        _plant(models, save_safetensors(small.state_dict()),
               {**_meta(small), "arch": {**small.arch_dict(), "depth": float("inf")}}), "Unreadable")
    data = save_safetensors(small.state_dict())
    meta = {**_meta(small), "weights_sha256": __import__("hashlib").sha256(data).hexdigest()}
    out["truncated"] = (_plant(models, data[: len(data) // 2], meta), "corrupt or truncated")
    out["not safetensors"] = (_plant(models, b"\x00" * 64, _meta(small)), "not a readable safetensors")
    return out


@pytest.fixture
def models(tmp_path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


def test_store_and_predictor_refuse_every_bad_file_and_run_nothing(models, tmp_path):
    marker = tmp_path / "pwned"
    good = _good(models)
    bad = _bad_checkpoints(models, marker)
    for name, (checkpoint_id, words) in bad.items():
        t0 = time.perf_counter()
        with pytest.raises(CheckpointError) as info:  # what the window and `segdesk predict` do
            check_compatible(Predictor.from_checkpoint(models, checkpoint_id, device="cpu").meta, 1)
        assert words in str(info.value), (name, str(info.value))
        assert time.perf_counter() - t0 < 5, name  # refused before building anything large
    assert not marker.exists()
    CheckpointStore(models).set_current(bad["truncated"][0])
    assert CheckpointStore(models).load_current()[0] != bad["truncated"][0]  # falls back to one that loads
    assert Predictor.from_checkpoint(models, good, device="cpu").checkpoint == good  # still fine
    assert not marker.exists()


def test_inference_worker_start_falls_back_to_the_newest_checkpoint_that_fits(models, tmp_path):
    marker = tmp_path / "pwned"
    _good(models)
    good = _good(models)
    bad = _bad_checkpoints(models, marker)
    CheckpointStore(models).set_current(bad["truncated"][0])
    worker = InferenceWorker(models, tmp_path / "proposals", n_classes=1, device="cpu")
    loaded, failed = [], []
    worker.model_loaded.connect(lambda c, d: loaded.append(c))
    worker.model_failed.connect(lambda c, m: failed.append((c, m)))
    worker.start()
    assert loaded == [good]  # newest good one; the planted ones after it are skipped
    assert [c for c, _ in failed] == [bad["truncated"][0]]  # one message, for the current one
    assert not marker.exists()


def test_inference_worker_keeps_its_model_and_says_why(models, tmp_path):
    """The GUI path: InferenceWorker.load_checkpoint emits model_failed, keeps its predictor, and
    the next proposal still comes from the previous model."""
    marker = tmp_path / "pwned"
    image = tmp_path / "disc.png"
    write_disc_image(image)
    good = _good(models)
    worker = InferenceWorker(models, tmp_path / "proposals", n_classes=1, device="cpu")
    (tmp_path / "proposals").mkdir()
    loaded, failed, ready = [], [], []
    worker.model_loaded.connect(lambda c, d: loaded.append(c))
    worker.model_failed.connect(lambda c, m: failed.append((c, m)))
    worker.prediction_ready.connect(lambda r, i, label, c: ready.append(c))
    worker.load_checkpoint(good)
    assert loaded == [good]
    predictor = worker._predictor
    bad = _bad_checkpoints(models, marker)
    for name, (checkpoint_id, words) in bad.items():
        worker.load_checkpoint(checkpoint_id)
        assert failed[-1][0] == checkpoint_id and words in failed[-1][1], (name, failed[-1])
        assert worker._predictor is predictor, name
    assert loaded == [good] and len(failed) == len(bad)
    worker.request(1, "disc", str(image), -1, False)
    assert ready == [good]
    assert not marker.exists()


def test_trainer_starts_fresh_instead_of_from_a_bad_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    project = Project.create(tmp_path / "proj", ["disc"])
    models = project.root / "models"
    bad = _bad_checkpoints(models, marker)
    for checkpoint_id, _ in bad.values():
        CheckpointStore(models).set_current(checkpoint_id)
        trainer = Trainer(project.root, TrainConfig(depth=2, base_width=4, crop_size=32), device="cpu")
        assert trainer.parent is None  # fresh weights; the bad file is left as it was
    assert not marker.exists()


def test_loop_controller_shows_the_refusal_and_the_model_that_stays(qtbot, tmp_path, monkeypatch):
    from segdesk.qt.main_window import MainWindow

    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _p, t, m, *a, **k: shown.append((t, m)))
    images = tmp_path / "images"
    images.mkdir()
    write_disc_image(images / "a.png")
    project = Project.create(tmp_path / "proj", ["disc"])
    project.add_images([images])
    project.settings["auto_train_after"] = 1000  # no training in this test
    project.save()
    good = _good(project.root / "models")
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), device="cpu",
                   train_config=TrainConfig(depth=2, base_width=4, crop_size=32))
    qtbot.addWidget(w)
    assert w.open_project(project.root)
    qtbot.waitUntil(lambda: w.current is not None, timeout=20_000)  # the image is read off the GUI thread
    qtbot.waitUntil(lambda: w.loop.active_checkpoint == good, timeout=120_000)
    bad = _plant(project.root / "models", pickle.dumps(MakesMarker(tmp_path / "pwned")),
                 _meta(UNet(n_outputs=2, depth=2, base_width=4)))
    w.loop.use_checkpoint(bad)
    qtbot.waitUntil(lambda: any(t == "Model not loaded" for t, _ in shown), timeout=120_000)
    title, message = next((t, m) for t, m in shown if t == "Model not loaded")
    assert f"Model {good} keeps proposing." in message and bad in message
    assert w.loop.active_checkpoint == good
    assert w.loop.segment(w.current.image_id)
    qtbot.waitUntil(lambda: w.current.proposal is not None, timeout=120_000)
    assert w.current.proposal_checkpoint == good
    assert not (tmp_path / "pwned").exists()
    w.close()
