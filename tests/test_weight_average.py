"""The weight average (EMA) that the trainer judges and keeps, and the rule for keeping a model
trained on more labels."""

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from segdesk.ml.checkpoints import CheckpointStore
from segdesk.ml.config import TrainConfig
from segdesk.ml.train import KEEP_SLACK, Trainer
from segdesk.ml.weight_average import WeightAverage
from tests.synthetic import make_project, make_sample

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = dict(crop_size=48, batch_size=4, depth=3, base_width=8, lr=2e-3, val_every=25)


def test_average_follows_the_weights_by_hand():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    average = WeightAverage(model, decay=0.99)
    assert average.model is not model
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, -2.0]]))
    average.update()  # warm-up: decay (1 + 1) / (10 + 1), the new weights count 9/11
    expected = torch.tensor([[1.0, 2.0]]) * 2 / 11 + torch.tensor([[3.0, -2.0]]) * 9 / 11
    assert torch.allclose(average.model.weight, expected)
    for _ in range(1000):
        average.update()  # held weights: the average converges to them
    assert torch.allclose(average.model.weight, model.weight, atol=1e-4)
    assert not average.model.weight.requires_grad

    plain = WeightAverage(model, decay=0.0)
    assert plain.model is model  # no averaging: the trained model is the judged one
    with pytest.raises(ValueError):
        WeightAverage(model, decay=1.0)


def test_checkpoints_hold_the_average_not_the_raw_weights(tmp_path):
    project, _ = make_project(tmp_path, 4, size=48, seed=1)
    trainer = Trainer(project.root, TrainConfig(**TINY), device="cpu")
    for _ in range(20):
        trainer.step()
    checkpoint_id = trainer.save_checkpoint(*trainer.validate())
    saved = CheckpointStore(project.root / "models").load(checkpoint_id)[0]  # the state dict
    raw = trainer.model.state_dict()
    kept = trainer.average.model.state_dict()
    assert all(torch.equal(saved[k], kept[k]) for k in kept)
    assert any(not torch.equal(kept[k], raw[k]) for k in raw)  # the average lags the raw weights


def _judge_with(trainer: Trainer, dice: float, monkeypatch) -> bool:
    monkeypatch.setattr(trainer, "validate", lambda: (dice, [dice]))
    return trainer._judge()


def test_a_model_with_more_labels_is_kept_unless_clearly_worse(tmp_path, monkeypatch):
    """On a few held-out images the best Dice so far is partly luck: a model that has seen more
    labelled images replaces it within KEEP_SLACK, and only then."""
    project, _ = make_project(tmp_path, 4, size=48, seed=1)
    trainer = Trainer(project.root, TrainConfig(**TINY), device="cpu")
    store = CheckpointStore(project.root / "models")
    assert _judge_with(trainer, 0.80, monkeypatch)  # the first sets the bar
    assert not _judge_with(trainer, 0.80 - KEEP_SLACK / 2, monkeypatch)  # same labels, lower: not kept
    assert len(store.list()) == 1

    rng = np.random.default_rng(7)
    for i in range(2):
        image, mask = make_sample(rng, 48)
        cv2.imwrite(str(tmp_path / f"extra{i}.png"), image)
        entry, = project.add_images([tmp_path / f"extra{i}.png"]).added
        project.accept(entry.id, mask + 1)
        assert trainer.refresh_labels()
        trainer.best_dice = 0.80  # as if the held-out images had stayed the same
        if i == 0:
            assert _judge_with(trainer, 0.80 - KEEP_SLACK / 2, monkeypatch)  # more labels, within the slack
            assert trainer.best_dice == pytest.approx(0.80 - KEEP_SLACK / 2)
            assert not _judge_with(trainer, 0.78, monkeypatch)  # no labels since that one: must beat it
        else:
            assert not _judge_with(trainer, 0.80 - 2 * KEEP_SLACK, monkeypatch)  # more labels, clearly worse
    assert len(store.list()) == 2
