"""Learning from a project's images before it has labels (segdesk.ml.pretrain): real tiny runs."""

import json

import numpy as np
import pytest
import torch

from segdesk.cli import main
from segdesk.core.errors import SegdeskError
from segdesk.ml import pretrain
from segdesk.ml.config import TrainConfig
from segdesk.ml.train import Trainer
from segdesk.ml.unet import UNet
from tests.synthetic import make_project

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = dict(crop_size=32, batch_size=2, depth=2, base_width=4, val_every=10, precision="fp32")


@pytest.fixture
def unlabelled(tmp_path):
    project, _ = make_project(tmp_path, 4, size=48, seed=0, accept=False)
    return project


def _loss_on_a_fixed_batch(learner: pretrain.Pretrainer) -> float:
    rng = np.random.default_rng(99)
    crops = np.stack([learner.images.crop(rng, 32) for _ in range(8)]).transpose(0, 3, 1, 2)
    clean = torch.from_numpy(np.ascontiguousarray(crops))
    hidden = pretrain.hidden_patches(8, 32, rng)
    prompts = torch.zeros((8, learner.model.prompt_channels, 32, 32))
    with torch.no_grad():
        features = learner.model.decoder(learner.model.encoder(torch.cat([clean * (1 - hidden), prompts], dim=1)))
        return float(pretrain.restoration_loss(learner.head(features), clean, hidden))


def test_the_restoration_error_falls(unlabelled):
    model = UNet(3, 2, depth=2, base_width=8)
    learner = pretrain.Pretrainer(model, pretrain.ProjectImages(unlabelled), torch.device("cpu"), "fp32",
                                  crop_size=32, batch_size=4, lr=2e-3, weight_decay=1e-4)
    before = _loss_on_a_fixed_batch(learner)
    for _ in range(150):
        learner.step()
    after = _loss_on_a_fixed_batch(learner)
    assert after < 0.7 * before, (before, after)  # measured: 1.04 -> 0.48


def test_pretraining_is_saved_and_a_new_trainer_starts_from_it(unlabelled):
    trainer = Trainer(unlabelled.root, TrainConfig(**TINY), device="cpu")
    assert not trainer.has_data and trainer.pretrained_steps == 0
    steps = trainer.pretrain(max_steps=120)

    assert steps == 120 == trainer.pretrained_steps
    assert pretrain.pretrained_path(unlabelled.root / "models").is_file()
    # a new trainer of this project starts from the same weights (the head excepted: it is fresh)
    again = Trainer(unlabelled.root, TrainConfig(**TINY), device="cpu")
    assert again.pretrained_steps == 120
    for (name, mine), theirs in zip(trainer.model.state_dict().items(), again.model.state_dict().values()):
        if not name.startswith("head."):
            assert torch.equal(mine, theirs), name


def test_checkpoints_say_how_much_pretraining_is_behind_them(unlabelled):
    trainer = Trainer(unlabelled.root, TrainConfig(**TINY), device="cpu")
    trainer.pretrain(max_steps=5)
    for entry in unlabelled.images:
        label = np.ones(entry.shape, np.uint8)
        label[10:30, 10:30] = 2
        unlabelled.accept(entry.id, label)
    assert trainer.refresh_labels()
    progress = trainer.run(max_steps=10)
    assert progress.checkpoint is not None
    meta = trainer.store.load(progress.checkpoint)[1]
    assert meta["pretrained_steps"] == 5
    with pytest.raises(SegdeskError, match="already learnt from labels"):
        trainer.pretrain(max_steps=10)
    assert Trainer(unlabelled.root, TrainConfig(**TINY), device="cpu").pretrained_steps == 5
    meta_path = trainer.store.dir / f"{progress.checkpoint}.json"  # a damaged count is read as none
    meta_path.write_text(meta_path.read_text().replace('"pretrained_steps": 5', '"pretrained_steps": "many"'))
    assert Trainer(unlabelled.root, TrainConfig(**TINY), device="cpu").pretrained_steps == 0


@pytest.mark.parametrize("damage", ["truncated", "other network", "pickle"])
def test_a_damaged_pretraining_means_fresh_weights_not_a_crash(unlabelled, damage, caplog):
    trainer = Trainer(unlabelled.root, TrainConfig(**TINY), device="cpu")
    trainer.pretrain(max_steps=3)
    path = pretrain.pretrained_path(unlabelled.root / "models")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "pickle":
        path.write_bytes(b"\x80\x04" + b"x" * 200)
    else:
        wider = Trainer(unlabelled.root, TrainConfig(**{**TINY, "base_width": 8}), device="cpu")
        assert wider.pretrained_steps == 0
        assert "another network" in caplog.text
        return
    fresh = Trainer(unlabelled.root, TrainConfig(**TINY), device="cpu")
    assert fresh.pretrained_steps == 0
    assert "starting from fresh weights" in caplog.text


def test_unreadable_images_are_left_out_and_none_at_all_is_a_clear_error(unlabelled):
    for entry in unlabelled.images[1:]:
        unlabelled.source_path(entry).write_bytes(b"not an image")
    images = pretrain.ProjectImages(unlabelled)
    rng = np.random.default_rng(0)
    assert images.crop(rng, 32).shape == (32, 32, 3)
    unlabelled.source_path(unlabelled.images[0]).write_bytes(b"")
    images = pretrain.ProjectImages(unlabelled)
    with pytest.raises(SegdeskError, match="no readable images"):
        images.crop(rng, 32)


def test_cli_pretrains_continues_and_refuses_a_trained_model(unlabelled, capsys):
    root = str(unlabelled.root)
    assert main(["pretrain", root, "--steps", "4"]) == 0
    assert "pretrained 4 steps (4 in all)" in capsys.readouterr().out
    assert main(["pretrain", root, "--steps", "6"]) == 0
    assert "pretrained 2 steps (6 in all)" in capsys.readouterr().out
    assert main(["pretrain", root, "--steps", "6"]) == 0
    assert "already pretrained 6 steps" in capsys.readouterr().out
    assert main(["info", root]) == 0
    assert json.loads(capsys.readouterr().out)["pretrained_steps"] == 6
    assert main(["pretrain", root]) == 2  # a budget is required
    for entry in unlabelled.images:
        label = np.ones(entry.shape, np.uint8)
        label[5:20, 5:20] = 2
        unlabelled.accept(entry.id, label)
    assert main(["train", root, "--steps", "10", "--val-every", "5", "--crop", "32", "--batch", "2"]) == 0
    capsys.readouterr()
    assert main(["pretrain", root, "--steps", "20"]) == 1
    assert "already learnt from labels" in capsys.readouterr().err




def test_a_full_disk_is_a_clear_error_and_leaves_no_half_written_file(unlabelled, capsys, monkeypatch):
    """Simulated where bytes reach the disk (tests run as root, where chmod stops no write)."""
    import errno
    import os

    from segdesk.core import storage

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage, "_write_call", full)
    assert main(["pretrain", str(unlabelled.root), "--steps", "2"]) == 1
    err = capsys.readouterr().err
    assert "Could not save pretrained.safetensors" in err and "No space left" in err and "Traceback" not in err
    models = unlabelled.root / "models"
    assert not pretrain.pretrained_path(models).exists()
    assert not list(unlabelled.root.rglob(storage.TMP_PREFIX + "*"))
