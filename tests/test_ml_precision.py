"""Training in bf16 where the hardware does it: the choice, and a bf16-trained model that learns
and is kept, judged and exported in fp32."""

import numpy as np
import pytest
import torch

from segdesk.core.errors import SegdeskError
from segdesk.ml import precision
from segdesk.ml.checkpoints import CheckpointStore
from segdesk.ml.config import TrainConfig
from segdesk.ml.inference import Predictor
from segdesk.ml.train import Trainer
from tests.synthetic import make_project, make_sample
from tests.test_ml_train import TINY, dice

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_precision_follows_the_setting_and_the_hardware():
    cpu = torch.device("cpu")
    assert precision.training_precision("fp32", cpu) == "fp32"
    assert precision.training_precision("bf16", cpu) == "bf16"  # asked for: emulated where not native
    native = precision.cpu_has_native_bf16()
    assert precision.training_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert precision.training_precision(None, cpu) == precision.training_precision("auto", cpu)
    cuda = torch.device("cuda")
    assert precision.training_precision(" AUTO ", cuda) == ("bf16" if precision.cuda_has_native_bf16() else "fp32")
    assert precision.training_precision("auto", torch.device("mps")) == "fp32"
    with pytest.raises(SegdeskError, match="MPS"):
        precision.training_precision("bf16", torch.device("mps"))
    with pytest.raises(SegdeskError, match="auto, bf16, fp32"):
        precision.training_precision("half", cpu)


def test_autocast_computes_in_bf16_only_when_asked():
    layer = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with precision.autocast(torch.device("cpu"), "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with precision.autocast(torch.device("cpu"), "fp32"):
        assert layer(x).dtype == torch.float32


def test_a_model_trained_in_bf16_learns_and_is_kept_in_fp32(tmp_path):
    """The same 200 steps as test_ml_train's fp32 run (held-out Dice 0.93-0.98 there), in bf16."""
    project, _ = make_project(tmp_path, 16, size=64, seed=0)
    trainer = Trainer(project.root, TrainConfig(**TINY, precision="bf16"), device="cpu")
    assert trainer.precision == "bf16"
    progress = trainer.run(max_steps=200)
    assert progress.checkpoint is not None
    weights, meta = CheckpointStore(project.root / "models").load(progress.checkpoint)
    assert meta["precision"] == "bf16"
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())
    predictor = Predictor.from_checkpoint(project.root / "models", device="cpu")
    rng = np.random.default_rng(1234)  # images the model has never seen
    scores = [dice(predictor.predict(image).classes, truth) for image, truth in
              (make_sample(rng, 64) for _ in range(8))]
    assert np.mean(scores) > 0.8, scores


def test_unknown_precision_is_refused_before_training(tmp_path):
    project, _ = make_project(tmp_path, 4, size=48, seed=0)
    with pytest.raises(SegdeskError, match="precision"):
        Trainer(project.root, TrainConfig(**TINY, precision="fp8"), device="cpu")


def test_the_training_panel_says_when_training_runs_in_bf16(tmp_path, qtbot):
    import dataclasses

    from segdesk.qt.training_panel import TrainingPanel

    project, _ = make_project(tmp_path, 4, size=48, seed=0)
    panel = TrainingPanel()
    qtbot.addWidget(panel)
    for number_format in ("bf16", "fp32"):
        trainer = Trainer(project.root, TrainConfig(**TINY, precision=number_format), device="cpu", init=None)
        trainer.step()
        panel.show_progress(dataclasses.asdict(trainer.progress("training")))  # what the worker emits
        assert panel.speed.text().endswith("crops/s in bf16" if number_format == "bf16" else "crops/s")
