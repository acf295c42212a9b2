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


@pytest.mark.parametrize("withholds", [False, True])
def test_the_cached_proposal_is_the_projects(tmp_path, withholds):
    project, _ = make_project(tmp_path, 1, size=32, accept=False)
    entry = project.images[0]
    torch.manual_seed(0)
    model = UNet(n_outputs=2, depth=2, base_width=4)
    meta = {"arch": model.arch_dict(), "classes": ["class1"], "normalisation": NORMALISATION,
            "working_scale": 1.0, "step": 1, "postprocess": postprocess.unvalidated(3) if withholds else None}
    checkpoint = CheckpointStore(project.root / "models").save(model.state_dict(), meta)
    worker = InferenceWorker(project.root / "models", project.root / "proposals", project.n_classes, device="cpu")
    ready = []
    worker.prediction_ready.connect(lambda *answer: ready.append(answer))
    worker.load_checkpoint(checkpoint)
    worker.request(1, entry.id, str(project.source_path(entry)), -1, False, withholds)  # shown anyway
    [(_, image_id, label, made_by, learning)] = ready
    assert image_id == entry.id and made_by == checkpoint and learning is withholds
    stored, stored_meta = project.read_proposal(entry.id)
    assert np.array_equal(stored, label)
    assert stored_meta["checkpoint"] == checkpoint and stored_meta.get("learning", False) is withholds
