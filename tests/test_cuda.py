"""The GPU paths, on a real NVIDIA GPU (skipped without one; run on a lent GPU machine).

What a team that trains on a GPU server and labels on laptops relies on: the GPU is found and named,
training runs there (in bf16 on Ampere and later), and its checkpoints propose on a CPU, through
torch and through ONNX Runtime, with the masks the GPU gives."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from segdesk.core.clicks import Click
from segdesk.ml.checkpoints import CheckpointStore
from segdesk.ml.config import TrainConfig
from segdesk.ml.device import device_name, pick_device
from segdesk.ml.inference import Predictor
from segdesk.ml.precision import cuda_has_native_bf16
from segdesk.ml.train import Trainer
from tests.synthetic import make_choice_sample, make_project, make_sample

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]

CONFIG = dict(crop_size=48, batch_size=8, depth=3, base_width=8, lr=2e-3, val_every=50)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    both = float((a > 0).sum() + (b > 0).sum())
    return 1.0 if both == 0 else 2 * float(((a > 0) & (b > 0)).sum()) / both


@pytest.fixture(scope="module")
def gpu_project(tmp_path_factory):
    """A 16-image project trained 300 steps on the GPU with the default precision (auto)."""
    project, _ = make_project(tmp_path_factory.mktemp("gpu"), 16, size=64, seed=0)
    trainer = Trainer(project.root, TrainConfig(**CONFIG), device="cuda")
    progress = trainer.run(max_steps=300)
    return project, trainer, progress


def test_auto_picks_the_gpu_and_names_it():
    device = pick_device(None)
    assert device.type == "cuda"
    assert device_name(device).endswith("(CUDA)") and torch.cuda.get_device_name(0) in device_name(device)


def test_gpu_training_learns_in_bf16_where_the_gpu_has_it(gpu_project):
    project, trainer, progress = gpu_project
    assert next(trainer.model.parameters()).is_cuda
    assert trainer.precision == ("bf16" if cuda_has_native_bf16(torch.device("cuda")) else "fp32")
    meta = CheckpointStore(project.root / "models").load(progress.checkpoint)[1]
    assert meta["device"].endswith("(CUDA)") and meta["precision"] == trainer.precision
    assert progress.val_dice is not None and progress.val_dice > 0.8, progress.val_dice


def test_a_gpu_checkpoint_proposes_on_the_cpu_as_on_the_gpu(gpu_project):
    """Trained on the GPU, used on a laptop: the checkpoint's weights and its ONNX export load on
    the CPU, and the three engines' masks agree with each other and with the truth."""
    project, _, _ = gpu_project
    models = project.root / "models"
    on_gpu = Predictor.from_checkpoint(models, device="cuda")
    on_cpu_torch = Predictor.from_checkpoint(models, device="cpu", engine="torch")
    on_cpu_onnx = Predictor.from_checkpoint(models, device="cpu", engine="onnx")
    assert on_gpu.engine == "torch" and on_cpu_onnx.engine == "onnxruntime"
    rng = np.random.default_rng(99)
    for _ in range(4):
        image, truth = make_sample(rng, 96)
        gpu = on_gpu.predict(image).classes
        assert dice(gpu, on_cpu_torch.predict(image).classes) >= 0.99
        assert dice(gpu, on_cpu_onnx.predict(image).classes) >= 0.99
        assert dice(gpu, truth) > 0.8


def test_clicks_are_answered_on_the_gpu(tmp_path):
    """Two identical discs, only a click tells which is meant: on the GPU the click picks it."""
    from tests.synthetic import make_choice_project

    project = make_choice_project(tmp_path / "choice", n_images=10)
    config = TrainConfig(crop_size=64, batch_size=8, val_every=100, base_width=8, working_scale=1.0)
    Trainer(project.root, config, device="cuda").run(max_steps=600)
    predictor = Predictor.from_checkpoint(project.root / "models", device="cuda")
    assert predictor.accepts_clicks
    rng = np.random.default_rng(7)
    gains = []
    for i in range(4):
        image, truth = make_choice_sample(rng)
        shown = predictor.predict(image).classes
        ys, xs = np.nonzero(truth)
        click = Click(float(ys.mean()), float(xs.mean()), 1, True)
        refined = predictor.refine(image, [click], shown, key=i).classes
        gains.append(dice(refined, truth) - dice(shown, truth))
    assert np.mean(gains) > 0.2, gains


def test_cli_trains_on_the_gpu(tmp_path):
    """`segdesk train --device cuda` end to end, in its own process as a team would run it."""
    project, _ = make_project(tmp_path / "cli", 8, size=64, seed=3)
    result = subprocess.run(
        [sys.executable, "-m", "segdesk", "train", str(project.root), "--device", "cuda", "--steps", "60",
         "--crop", "48", "--base-width", "8", "--val-every", "30"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    store = CheckpointStore(project.root / "models")
    meta = json.loads(json.dumps(store.load(store.current_id())[1]))
    assert meta["device"].endswith("(CUDA)")
