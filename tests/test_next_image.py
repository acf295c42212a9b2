"""Next image by uncertainty: the score of one proposal, stored with it, and the choice it drives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segdesk.core import next_image
from segdesk.core.project import Project, write_proposal
from segdesk.ml.uncertainty import SURE, uncertainty
from tests.conftest import write_disc_image


def test_a_confident_proposal_ranks_below_an_unsure_one():
    classes = np.zeros((40, 40), np.uint8)
    classes[10:20, 10:20] = 1
    sure = np.full((40, 40), 0.99, np.float32)
    unsure = sure.copy()
    unsure[10:20, 10:20] = 0.55  # hesitant about the object it found
    assert uncertainty(classes, sure) < uncertainty(classes, unsure)
    assert uncertainty(classes, unsure) == pytest.approx(0.45, abs=1e-3)  # the object's pixels only
    # a sure empty image is 0; hesitating somewhere without finding anything is not sure
    assert uncertainty(np.zeros((40, 40), np.uint8), sure) == 0.0
    hesitant = sure.copy()
    hesitant[0:3, 0:3] = SURE - 0.3
    assert uncertainty(np.zeros((40, 40), np.uint8), hesitant) > uncertainty(classes, sure)


def test_the_background_does_not_dilute_the_score():
    """A small object found with the same hesitation as a large one scores the same: the sure
    background around it takes no part (a whole-image mean would call the small one surer)."""
    small, large = np.zeros((100, 100), np.uint8), np.zeros((100, 100), np.uint8)
    small[45:50, 45:50] = 1
    large[20:80, 20:80] = 1
    conf = np.full((100, 100), 0.999, np.float32)
    small_conf, large_conf = conf.copy(), conf.copy()
    small_conf[small == 1], large_conf[large == 1] = 0.7, 0.7
    assert uncertainty(small, small_conf) == pytest.approx(uncertainty(large, large_conf))
    with pytest.raises(ValueError):
        uncertainty(small, conf[:50])


@pytest.fixture
def project(tmp_path) -> Project:
    for i in range(4):
        write_disc_image(tmp_path / f"img{i}.png", seed=i)
    p = Project.create(tmp_path / "proj", ["lesion"])
    p.add_images([tmp_path / f"img{i}.png" for i in range(4)])
    return p


def test_the_proposal_metadata_keeps_the_uncertainty(project):
    entry = project.images[0]
    label = np.ones(entry.shape, np.uint8)
    project.save_proposal(entry.id, label, "ck-3", uncertainty=0.2345678)
    stored, meta = project.read_proposal(entry.id)
    assert np.array_equal(stored, label)
    assert meta["checkpoint"] == "ck-3" and meta["uncertainty"] == 0.2346
    assert project.proposal_meta(entry.id) == meta
    write_proposal(project.root / "proposals", entry.id, label, "ck-3")  # none known: none stored
    assert "uncertainty" not in project.proposal_meta(entry.id)
    with pytest.raises(ValueError):
        write_proposal(project.root / "proposals", entry.id, label, "ck-3", uncertainty=float("nan"))
    # a damaged file is a cache miss, never an error
    path = project.proposal_path(entry.id).with_suffix(".json")
    path.write_text(json.dumps({"checkpoint": "ck-3", "uncertainty": "high"}))
    assert "uncertainty" not in project.proposal_meta(entry.id)
    path.write_text("{not json")
    assert project.proposal_meta(entry.id) is None and project.read_proposal(entry.id) is None


def test_least_sure_first_picks_the_highest_score_of_the_current_model(project):
    a, b, c, d = (e.id for e in project.images)
    label = np.ones(project.images[0].shape, np.uint8)
    project.save_proposal(b, label, "ck-2", uncertainty=0.1)
    project.save_proposal(c, label, "ck-2", uncertainty=0.3)
    project.save_proposal(d, label, "ck-1", uncertainty=0.45)  # an older model's: does not count
    assert next_image.choose(project, a, next_image.IN_ORDER, "ck-2") == b
    assert next_image.choose(project, a, next_image.UNCERTAIN, "ck-2") == c
    assert next_image.choose(project, a, next_image.UNCERTAIN, "ck-1") == d
    assert next_image.choose(project, a, next_image.UNCERTAIN, None) == b  # no model: in order
    scores = next_image.Scores(project.root / "proposals")
    assert next_image.choose(project, a, next_image.UNCERTAIN, "ck-2", scores) == c
    project.save_proposal(b, label, "ck-2", uncertainty=0.4)  # rescored: the cache reads it again
    assert next_image.choose(project, a, next_image.UNCERTAIN, "ck-2", scores) == b
    project.accept(b, label)
    assert next_image.choose(project, a, next_image.UNCERTAIN, "ck-2", scores) == c
    for i in (a, c, d):
        project.accept(i, label)
    assert next_image.choose(project, a, next_image.UNCERTAIN, "ck-2") is None


def test_the_setting_is_stored_and_a_bad_one_means_in_order(project):
    assert next_image.order_of(project) == next_image.IN_ORDER
    next_image.set_order(project, next_image.UNCERTAIN)
    assert next_image.order_of(Project.open(project.root)) == next_image.UNCERTAIN
    with pytest.raises(ValueError):
        next_image.set_order(project, "random")
    project.settings[next_image.ORDER_KEY] = 7  # hand-edited
    assert next_image.order_of(project) == next_image.IN_ORDER
