"""The working resolution rule: planned from label fingerprints, stored in checkpoints, applied per
image; and a real tiny training run across image sizes."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from segdesk.bench.synthetic_sets import scene_sample
from segdesk.core.project import Project
from segdesk.ml.checkpoints import CheckpointStore
from segdesk.ml.config import TrainConfig
from segdesk.ml.inference import Predictor
from segdesk.ml.normalise import NORMALISATION
from segdesk.ml.planning import ScaleRule, choose_scale_rule, fingerprint, fixed_scale
from segdesk.ml.train import Trainer
from segdesk.ml.unet import UNet


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _disc_label(height: int, width: int, diameter: float) -> np.ndarray:
    label = np.ones((height, width), np.uint8)
    cv2.circle(label, (width // 2, height // 2), int(diameter / 2), 2, -1)
    return label


def test_objects_that_scale_with_their_images_get_a_per_image_rule():
    """Sides 256 to 2,048 px, objects a fixed share of the side: every image is scaled to the same
    shorter side, so the objects end up the same size in pixels."""
    rng = np.random.default_rng(0)
    prints = [fingerprint(_disc_label(side, side, side * rng.uniform(0.18, 0.22)))
              for side in (256, 400, 700, 1024, 1500, 2048)]
    rule = choose_scale_rule(prints, crop_size=128)
    assert rule.per_image
    widths = [np.median(f.diameters) * rule.scale_for(f.height, f.width) for f in prints]
    assert max(widths) / min(widths) < 1.3 and 40 < np.median(widths) < 60  # ~48 px everywhere
    assert ScaleRule.from_meta({"scale_rule": rule.to_meta()}) == rule


def test_objects_that_keep_their_pixel_size_get_a_fixed_scale():
    """Microscopy: fields of view of many sizes, nuclei ~14 px in all of them."""
    prints = [fingerprint(_disc_label(side, side, 14)) for side in (256, 256, 520, 1024)]
    assert choose_scale_rule(prints, crop_size=128) == ScaleRule(1.0)


def test_images_of_one_size_keep_the_fixed_scale_of_before():
    """One size: the same number as the single-scale plan (median object 240 px -> ~48 px)."""
    prints = [fingerprint(_disc_label(400, 400, d)) for d in (200, 240, 280)]
    rule = choose_scale_rule(prints, crop_size=64)
    assert rule == ScaleRule(fixed_scale(prints, 64)) and 48 / 240 <= rule.scale <= 0.3
    assert choose_scale_rule(prints, crop_size=256) == ScaleRule(round(256 / 400, 3))


def test_a_per_image_rule_that_would_shrink_objects_away_is_refused():
    """dsb2018-like: the large images hold objects smaller for their size than the small ones'."""
    prints = [fingerprint(_disc_label(256, 256, 14)), fingerprint(_disc_label(360, 360, 48)),
              fingerprint(_disc_label(360, 360, 50)), fingerprint(_disc_label(1024, 1024, 20))]
    rule = choose_scale_rule(prints, crop_size=128)
    assert not rule.per_image


def test_rule_sizes_and_areas_per_image():
    rule = ScaleRule(side=200)
    assert rule.working_size(400, 600) == (200, 300) and rule.working_size(2000, 1000) == (400, 200)
    assert rule.scale_for(210, 300) == 1.0  # within 10% of 1: left as it is
    assert rule.scale_for(20, 20) == 4.0  # enlarged at most 4 times
    assert rule.area_factor(400, 600) == pytest.approx(4.0)  # working pixels -> full-resolution ones
    assert ScaleRule(0.5).area_factor(400, 600) == 1.0 and ScaleRule(0.5).stored_area_scale == 4.0
    image = np.zeros((400, 600, 3), np.float32)
    assert rule.resize(image).shape == (200, 300, 3)
    assert rule.resize(np.zeros((400, 600), np.uint8), nearest=True).shape == (200, 300)


def test_old_checkpoint_with_a_working_scale_number_still_proposes(tmp_path):
    """Checkpoints written before scale rules carry only ``working_scale``: a fixed scale."""
    model = UNet(3, 2, depth=2, base_width=4)
    meta = {"arch": model.arch_dict(), "classes": ["x"], "normalisation": NORMALISATION, "working_scale": 0.5}
    CheckpointStore(tmp_path).save(model.state_dict(), meta)
    predictor = Predictor.from_checkpoint(tmp_path, device="cpu")
    assert predictor.scale_rule == ScaleRule(0.5) and predictor.working_scale == 0.5
    prediction = predictor.predict(np.zeros((40, 60), np.uint8))
    assert prediction.classes.shape == (40, 60)
    assert ScaleRule.from_meta({}) == ScaleRule(1.0)


def _accept_discs(project: Project, folder: Path, sides: list[int], share: float) -> None:
    """Add one image per side with a centred disc ``share`` of the side wide, and accept it."""
    folder.mkdir(parents=True)
    for side in sides:
        mask = (_disc_label(side, side, side * share) - 1) * 200
        cv2.imwrite(str(folder / f"d{side}.png"), mask.astype(np.uint8))
    for entry in project.add_images([folder]).added:
        project.accept(entry.id, _disc_label(entry.height, entry.width, entry.height * share))


def test_trainer_keeps_its_fixed_scale_until_the_sizes_call_for_a_per_image_rule(tmp_path):
    project = Project.create(tmp_path / "project", ["organ"])
    _accept_discs(project, tmp_path / "a", [400], 0.6)
    trainer = Trainer(project.root, TrainConfig(crop_size=64, depth=2, base_width=4), device="cpu")
    first = trainer.scale_rule
    assert not first.per_image and first.scale < 0.3  # a 240 px organ -> ~48 px
    _accept_discs(project, tmp_path / "b", [440], 0.4)  # same size, smaller organ: the plan moves
    assert trainer.refresh_labels() and trainer.scale_rule == first  # kept: no cache invalidation
    _accept_discs(project, tmp_path / "c", [1600, 2400], 0.5)  # organs follow image size
    assert trainer.refresh_labels() and trainer.scale_rule.per_image
    project.settings["working_scale"] = 0.5
    project.save()
    assert trainer.refresh_labels() and trainer.scale_rule == ScaleRule(0.5)


# ----- real tiny training across image sizes


TINY = dict(crop_size=64, batch_size=4, depth=3, base_width=8, lr=2e-3, val_every=25)


def _scene_project(root: Path, sides: list[int], seed: int) -> Project:
    rng = np.random.default_rng(seed)
    source = root / "source"
    source.mkdir(parents=True)
    masks = {}
    for i, side in enumerate(sides):
        image, mask = scene_sample(rng, side)
        cv2.imwrite(str(source / f"s{i:02d}.png"), image)
        masks[f"s{i:02d}.png"] = mask
    project = Project.create(root / "project", ["blob"])
    for entry in project.add_images([source]).added:
        project.accept(entry.id, masks[Path(entry.source).name] + 1)
    return project


def test_a_model_trained_at_256_px_proposes_on_2048_px_images(tmp_path):
    """Ten 256 px images and one 2,048 px image of the same kind of scene (the one large image
    lets planning see that object size follows image size); 450 steps (~20 s on one core). The
    checkpoint's rule scales every image to one shorter side, so fresh scenes drawn at 2,048 px are
    proposed as well as at 256 px: measured mean Dice 0.96 and 0.94 (project seed 0; 0.91-0.96 on
    seeds 1, 2). Under the fixed scale 1 that the single-scale plan gives this project, the model
    takes the large images' thick vessel-like lines for blobs: Dice 0.26 at 2,048 px."""
    project = _scene_project(tmp_path, [256] * 10 + [2048], seed=0)
    trainer = Trainer(project.root, TrainConfig(**TINY), device="cpu")
    assert trainer.scale_rule.per_image
    trainer.run(max_steps=450)
    meta = CheckpointStore(project.root / "models").list()[-1]
    assert meta["scale_rule"] == trainer.scale_rule.to_meta() and meta["working_scale"] is None
    predictor = Predictor.from_checkpoint(project.root / "models", device="cpu")
    predictor.gate, predictor.postprocess = False, None  # the model's own masks
    for side in (2048, 256):
        rng = np.random.default_rng(123)  # the same scenes at both sizes
        dice = []
        for image, truth in (scene_sample(rng, side) for _ in range(3)):
            pred = predictor.predict(image).classes
            assert pred.shape == truth.shape
            dice.append(2 * ((pred == 1) & (truth == 1)).sum() / ((pred == 1).sum() + truth.sum()))
        assert np.mean(dice) > 0.8, (side, dice)
