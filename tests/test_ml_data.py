"""Training data from a project on disk: split, crops, corrections, working scale."""

import cv2
import numpy as np
import pytest
import torch

from segdesk.core.encoding import IGNORE
from segdesk.core.project import Project
from segdesk.ml.data import LabelledSet, held_out_ids, held_out_part
from segdesk.ml.planning import choose_working_scale
from tests.synthetic import make_project


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_held_out_split_rules():
    assert held_out_ids([]) == [] and held_out_ids(["a", "b"]) == []
    assert len(held_out_ids(["a", "b", "c"])) == 1
    many = [f"img{i:03d}" for i in range(200)]
    chosen = held_out_ids(many)
    assert 20 <= len(chosen) <= 60  # about 1 in 5
    assert set(held_out_ids(many[:100])) <= set(chosen) | set(many[100:])  # stable as images arrive
    assert held_out_ids(list(reversed(many))) == chosen  # order-independent


def test_held_out_part_is_a_third_with_something_to_draw():
    wide, tall = np.ones((60, 90), np.uint8), np.ones((90, 60), np.uint8)  # all background
    assert held_out_part(wide) == (0, 60, 60, 90)  # nothing to draw anywhere: the last third
    assert held_out_part(tall) == (60, 90, 0, 60)  # along the longer side
    wide[5:10, 70:80] = 2
    assert held_out_part(wide) == (0, 60, 60, 90)  # the right third has an object
    wide[:, 60:] = 1
    wide[20:30, 5:10] = 2
    assert held_out_part(wide) == (0, 60, 0, 30)  # the left third then
    wide[:, :30] = 1
    wide[50:55, 40:45] = 2
    assert held_out_part(wide) == (40, 60, 0, 90)  # then the bottom third


def test_first_accepted_images_hold_out_a_part(tmp_path):
    """With fewer than three accepted images a part of each is held out: no training crop carries a
    label from it, and validation is judged on it alone."""
    project, truths = make_project(tmp_path, 2, size=48, n_classes=2)
    for image_id in truths:  # class 1 where training may look, class 2 in the held-out part
        label = np.full((48, 48), 2, np.uint8)
        label[:, 32:] = 3
        project.accept(image_id, label)
    data = LabelledSet(Project.open(project.root, clean=False), crop_size=32)
    assert data.validation_ids == [] and sorted(data.part_ids) == sorted(truths)
    assert all(item.part for item in data.items) and data.n_train_images == 2
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        seen |= set(data.sample(rng)[1].unique().tolist())
    assert 1 in seen and 2 not in seen and IGNORE in seen
    items = list(data.validation_items())
    assert len(items) == 2
    for _, _, target in items:
        assert (target[:, :32] == IGNORE).all() and (target[:, 32:] == 2).all()
    # from the third accept on whole images are held out, and no parts
    extra, = make_project(tmp_path / "more", 1, size=48, seed=9)[0].images
    entry, = project.add_images([extra.source]).added
    project.accept(entry.id, np.full((48, 48), 2, np.uint8))
    data = LabelledSet(Project.open(project.root, clean=False), crop_size=32)
    assert len(data.validation_ids) == 1 and data.part_ids == [] and not any(i.part for i in data.items)


def test_sample_shapes_and_determinism(tmp_path):
    project, _ = make_project(tmp_path, 6, size=40)
    data = LabelledSet(Project.open(project.root, clean=False), crop_size=32)
    assert data.n_train_images + len(data.validation_ids) == 6 and len(data.validation_ids) >= 1
    image, target = data.sample(np.random.default_rng(3))
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert target.shape == (32, 32) and target.dtype == torch.int64
    assert set(target.unique().tolist()) <= {IGNORE, 0, 1}
    again = data.sample(np.random.default_rng(3))
    assert torch.equal(image, again[0]) and torch.equal(target, again[1])


def test_small_image_is_padded_with_ignore(tmp_path):
    project, _ = make_project(tmp_path, 2, size=24)
    data = LabelledSet(project, crop_size=48)
    _, target = data.sample(np.random.default_rng(0))
    assert target.shape == (48, 48)
    assert (target == IGNORE).sum() >= 48 * 48 - 24 * 24 * 1.6  # at most the image (zoomed in) is labelled


def test_corrected_image_counts_only_painted_pixels(tmp_path):
    project, truths = make_project(tmp_path, 1, size=48, accept=False)
    (image_id, truth), = truths.items()
    label = np.zeros_like(truth)
    label[10:20, 10:20] = 1  # one painted background patch
    label[truth == 1] = 2
    project.save_label(image_id, label)
    data = LabelledSet(Project.open(project.root, clean=False), crop_size=32)
    assert [i.corrected for i in data.items] == [True] and data.validation_ids == []
    rng = np.random.default_rng(0)
    painted = (label > 0).sum()
    for _ in range(10):
        _, target = data.sample(rng)
        labelled = (target != IGNORE).sum().item()
        assert 0 < labelled <= painted * 1.6 + 1  # crops land on painted pixels; nothing else counts


def test_validation_items_at_working_scale(tmp_path):
    project, _ = make_project(tmp_path, 5, size=40)
    data = LabelledSet(project, crop_size=32, working_scale=0.5)
    items = list(data.validation_items())
    assert len(items) == len(data.validation_ids) >= 1
    _, image, target = items[0]
    assert image.shape == (3, 20, 20) and target.shape == (20, 20)
    assert target.min() >= 0  # accepted images are fully labelled


def test_unreadable_label_is_skipped(tmp_path):
    project, _ = make_project(tmp_path, 3, size=32)
    data = LabelledSet(project, crop_size=32)
    for item in data.items:
        project.label_path(item.image_id).write_bytes(b"not a png")
    with pytest.raises(Exception, match="no readable labelled images"):
        data.sample(np.random.default_rng(0))


def _big_object_project(tmp_path, size=400, radius=120):
    project = Project.create(tmp_path / "p", ["organ"])
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (size // 2, size // 2), radius, 1, -1)
    cv2.imwrite(str(tmp_path / "a.png"), (mask * 200).astype(np.uint8))
    entry, = project.add_images([tmp_path / "a.png"]).added
    project.accept(entry.id, mask + 1)
    return project


def test_working_scale_downscales_large_objects_only(tmp_path):
    project = _big_object_project(tmp_path)
    scale = choose_working_scale(project, crop_size=64)
    assert 48 / 240 <= scale <= 0.3  # object diameter 240 px -> ~48 px
    assert choose_working_scale(project, crop_size=256) == pytest.approx(256 / 400, abs=0.01)
    small, _ = make_project(tmp_path / "small", 3, size=64)
    assert choose_working_scale(small, crop_size=32) == 1.0


def test_working_scale_setting_overrides_and_no_labels(tmp_path):
    project = _big_object_project(tmp_path)
    project.settings["working_scale"] = 0.75
    assert choose_working_scale(project) == 0.75
    empty = Project.create(tmp_path / "empty", ["x"])
    assert choose_working_scale(empty) == 1.0
