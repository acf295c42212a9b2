"""Images of any size (issue 14): the paths taken above a size limit, run on small images with the
limit lowered, against what the ordinary path shows or computes."""

from __future__ import annotations

import numpy as np
import pytest

from segdesk.ml import inference
from segdesk.ml.config import TrainConfig
from segdesk.ml.inference import Predictor


@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_classes_strip_by_strip_match_the_whole_image(monkeypatch, scale):
    import torch

    torch.manual_seed(0)
    predictor = Predictor.untrained(2, TrainConfig(base_width=4, working_scale=scale), device="cpu")
    pixels = np.random.default_rng(0).integers(0, 255, (301, 257, 3), np.uint8)
    whole = predictor.predict(pixels)
    monkeypatch.setattr(inference, "FULL_SIZE_STRIP_PIXELS", 3000)  # strips of a few rows
    strips = predictor.predict(pixels)
    assert strips.classes.shape == (301, 257) and strips.confidence.dtype == np.float32
    np.testing.assert_allclose(strips.confidence, whole.confidence, atol=1e-5)
    assert (strips.classes != whole.classes).mean() < 1e-3  # only where two classes tie to rounding
