"""The inference worker stores each proposal as the project does: ``Project.read_proposal`` reads
back the label it answered with, the checkpoint that made it, and whether that model was still
learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segdesk.ml import postprocess
from segdesk.ml.checkpoints import CheckpointStore
from segdesk.ml.normalise import NORMALISATION
from segdesk.ml.unet import UNet
from segdesk.qt.inference_worker import InferenceWorker
from tests.synthetic import make_project

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _worker(tmp_path, n_images: int, size: int, prompt_channels: int = 0, **meta_extra):
    """A project of generated images and an inference worker with a tiny untrained model loaded:
    (project, worker, checkpoint id)."""
    project, _ = make_project(tmp_path, n_images, size=size, accept=False)
    torch.manual_seed(0)
    model = UNet(n_outputs=2, depth=2, base_width=4, prompt_channels=prompt_channels)
    meta = {"arch": model.arch_dict(), "classes": ["class1"], "normalisation": NORMALISATION,
            "working_scale": 1.0, "step": 1, **meta_extra}
    checkpoint = CheckpointStore(project.root / "models").save(model.state_dict(), meta)
    worker = InferenceWorker(project.root / "models", project.root / "proposals", project.n_classes, device="cpu")
    worker.load_checkpoint(checkpoint)
    return project, worker, checkpoint


@pytest.mark.parametrize("withholds", [False, True])
def test_the_cached_proposal_is_the_projects(tmp_path, withholds):
    project, worker, checkpoint = _worker(tmp_path, 1, 32,
                                          postprocess=postprocess.unvalidated(3) if withholds else None)
    entry = project.images[0]
    ready = []
    worker.prediction_ready.connect(lambda *answer: ready.append(answer))
    worker.request(1, entry.id, str(project.source_path(entry)), -1, False, withholds)  # shown anyway
    [(_, image_id, label, made_by, learning)] = ready
    assert image_id == entry.id and made_by == checkpoint and learning is withholds
    stored, stored_meta = project.read_proposal(entry.id)
    assert np.array_equal(stored, label)
    assert stored_meta["checkpoint"] == checkpoint and stored_meta.get("learning", False) is withholds


def test_the_open_images_pixels_are_used_instead_of_reading_the_file_again(tmp_path):
    """The window hands the worker the pixels it has open (a 20,000 px image read twice was 0.8 GB
    more): the proposal is of those pixels, and the file is not read."""
    project, worker, _ = _worker(tmp_path, 1, 32)
    entry = project.images[0]
    ready = []
    worker.prediction_ready.connect(lambda *answer: ready.append(answer))
    pixels = project.read_image(entry).pixels
    before = pixels.copy()
    worker.request(1, entry.id, str(project.source_path(entry)), -1, False, False)
    worker.request(2, entry.id, str(tmp_path / "gone.png"), -1, False, False, pixels)  # no such file
    [(_, _, from_file, _, _), (_, _, from_pixels, _, _)] = ready
    assert np.array_equal(from_pixels, from_file)
    assert np.array_equal(pixels, before)  # read, never written


def test_mask_to_label_in_place_reuses_a_uint8_mask_and_copies_anything_else():
    from segdesk.core.encoding import mask_to_label

    mask = np.array([[0, 1], [2, 0]], np.uint8)
    assert mask_to_label(mask, in_place=True) is mask and mask.tolist() == [[1, 2], [3, 1]]
    other = np.array([[0, 1]], np.int64)
    label = mask_to_label(other, in_place=True)
    assert label.dtype == np.uint8 and label.tolist() == [[1, 2]] and other.tolist() == [[0, 1]]


def test_a_prefetch_gives_way_to_a_waiting_click_and_is_delivered_after_it(qtbot, tmp_path):
    """A click made while the next image's proposal is being prefetched is answered first (a large
    image's prefetch took 3.5 s, and the click waited for it); the prefetch is asked again behind
    the click and still arrives."""
    from segdesk.core.clicks import Click
    from segdesk.core.encoding import mask_to_label

    project, worker, _ = _worker(tmp_path, 2, 48, prompt_channels=3, prompts="clicks")
    shown, upcoming = project.images
    order = []
    worker.prediction_ready.connect(lambda rid, image_id, *rest: order.append(("proposal", image_id)))
    worker.prediction_failed.connect(lambda rid, image_id, message: order.append(("failed", image_id, message)))
    worker.refined.connect(lambda rid, image_id, *rest: order.append(("click", image_id)))

    worker.supersede(1, prefetch=True)
    worker.supersede_click(7, asked=True)  # the click is asked: its refine is queued behind the prefetch
    worker.request(1, upcoming.id, str(project.source_path(upcoming)), -1, True, False)
    assert order == []  # given way, neither failed nor delivered
    pixels = project.read_image(shown).pixels
    empty = mask_to_label(np.zeros(pixels.shape[:2], np.uint8))
    worker.refine(7, shown.id, pixels, [Click(24.0, 24.0, 1, True)], empty, None)
    assert order == [("click", shown.id)]
    qtbot.waitUntil(lambda: len(order) == 2)  # the prefetch, asked again through the worker's queue
    assert order[1] == ("proposal", upcoming.id)
    assert project.read_proposal(upcoming.id)[0] is not None


def test_without_anything_waiting_a_prefetch_runs_through(tmp_path):
    project, worker, _ = _worker(tmp_path, 1, 32)
    entry = project.images[0]
    ready = []
    worker.prediction_ready.connect(lambda *answer: ready.append(answer))
    worker.supersede(3, prefetch=True)
    worker.supersede_click(4)  # a pending click dropped (Backspace): nothing follows it, nothing waits
    worker.request(3, entry.id, str(project.source_path(entry)), -1, True, False)
    assert [answer[1] for answer in ready] == [entry.id]


# a model that proposes, but is unsure of these images (random weights): it withholds its proposal on each
UNSURE = {"version": 1, "classes": {}, "propose": True, "val_effort_ratio": 0.3, "val_uncertainty_max": 0.01}


@pytest.mark.parametrize("spec", [None, UNSURE], ids=["proposed", "withheld"])
def test_a_prefetch_given_way_to_its_own_image_on_screen_is_not_computed_twice(qtbot, tmp_path, spec):
    """The user moves to the image being prefetched: the on-screen request computes it, and the
    prefetch, asked again behind it, finds that proposal stored (or withheld by the same model:
    a 20,000 px image's proposal takes minutes) and ends without a second run."""
    project, worker, _ = _worker(tmp_path, 1, 48, postprocess=spec)
    entry = project.images[0]
    order = []
    worker.prediction_ready.connect(lambda rid, image_id, *rest: order.append(("proposal", rid)))
    worker.prediction_withheld.connect(lambda rid, image_id, *rest: order.append(("proposal", rid)))
    worker.prediction_failed.connect(lambda rid, image_id, message: order.append(("dropped", rid, message)))
    runs = []
    predict = worker._predictor.predict
    worker._predictor.predict = lambda *a, **k: (runs.append(k.get("should_stop") is not None), predict(*a, **k))[1]
    path = str(project.source_path(entry))

    worker.supersede(1, prefetch=True)
    worker.supersede(2, prefetch=False)  # the user is on the image: its request is queued
    worker.request(1, entry.id, path, -1, True, False)  # gives way at once
    worker.request(2, entry.id, path, -1, False, False)
    qtbot.waitUntil(lambda: len(order) == 2)
    assert order == [("proposal", 2), ("dropped", 1, "")]
    assert runs == [True, False]  # the prefetch began and gave way; the image was computed once
