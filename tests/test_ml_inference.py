"""Whole-image prediction: tiling, blending, working scale."""

import numpy as np
import pytest
import torch
from torch import nn

from segdesk.ml.config import TrainConfig
from segdesk.core.encoding import mask_to_label
from segdesk.ml.inference import Predictor
from segdesk.ml.normalise import NORMALISATION


pytestmark = pytest.mark.usefixtures("torch_one_thread")


class PixelModel(nn.Module):
    """A 1x1 convolution: each pixel's logits depend on that pixel only, so every tile computes
    exactly the same logits for a pixel as the whole image does."""

    def __init__(self, n_outputs: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, n_outputs, 1)

    def forward(self, x):
        return self.conv(x) * 5


def test_tiles_blend_to_the_untiled_result():
    meta = {"id": "0007", "normalisation": NORMALISATION, "working_scale": 1.0}
    predictor = Predictor(PixelModel(), meta, device="cpu")
    pixels = np.random.default_rng(0).integers(0, 4000, (70, 90)).astype(np.uint16)
    whole = predictor.predict(pixels, tile=128)
    tiled = predictor.predict(pixels, tile=16)  # 5 x 7 overlapping tiles: more pixels than 4 tiles
    # identical per-tile probabilities, so the weighted average differs only by float rounding
    np.testing.assert_allclose(tiled.confidence, whole.confidence, atol=1e-5)
    assert np.array_equal(tiled.classes, whole.classes)
    assert whole.checkpoint == "0007"


def test_working_scale_and_output_shape():
    config = TrainConfig(depth=2, base_width=4, working_scale=0.5)
    predictor = Predictor.untrained(n_classes=2, config=config, device="cpu")
    pixels = np.random.default_rng(1).integers(0, 255, (37, 53, 3)).astype(np.uint8)
    prediction = predictor.predict(pixels)
    assert prediction.classes.shape == (37, 53) and prediction.classes.dtype == np.uint8
    assert prediction.confidence.shape == (37, 53) and prediction.confidence.dtype == np.float32
    assert prediction.classes.max() <= 2 and prediction.checkpoint is None
    assert np.all((prediction.confidence >= 1 / 3 - 1e-6) & (prediction.confidence <= 1))
    label = mask_to_label(prediction.classes)
    assert label.dtype == np.uint8 and label.min() >= 1 and np.array_equal(label - 1, prediction.classes)


def test_large_image_is_tiled_and_covered():
    predictor = Predictor.untrained(n_classes=1, config=TrainConfig(depth=2, base_width=4), device="cpu")
    pixels = np.random.default_rng(2).random((150, 40)).astype(np.float32)
    prediction = predictor.predict(pixels, tile=32)  # 6000 px: more than a batch of 4 tiles
    assert prediction.classes.shape == (150, 40)
    assert np.isfinite(prediction.confidence).all() and prediction.confidence.min() >= 0.5 - 1e-6


class ShapeRecorder(PixelModel):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return super().forward(x)


def test_an_image_that_fits_one_batch_of_tiles_goes_in_one_piece():
    """Overlapping tiles would cost more compute for the same memory; beyond a batch, tiles."""
    meta = {"id": "0001", "normalisation": NORMALISATION, "working_scale": 1.0}
    model = ShapeRecorder()
    predictor = Predictor(model, meta, device="cpu")
    predictor.predict(np.zeros((60, 64), np.uint8), tile=32)  # 3840 px <= 4 x 32 x 32
    assert model.shapes == [(1, 3, 60, 64)]
    model.shapes.clear()
    predictor.predict(np.zeros((70, 64), np.uint8), tile=32)  # 4480 px: 3 x 3 overlapping tiles of 32
    assert [s[1:] for s in model.shapes] == [(3, 32, 32)] * 3 and sum(s[0] for s in model.shapes) == 9


def test_a_proposal_asked_to_stop_stops_between_batches_of_tiles_and_otherwise_is_unchanged():
    from segdesk.core.errors import Cancelled
    from segdesk.ml.unet import UNet

    torch.manual_seed(0)
    model = UNet(n_outputs=2, depth=2, base_width=4)
    meta = {"arch": model.arch_dict(), "classes": ["class1"], "normalisation": NORMALISATION,
            "working_scale": 1.0, "step": 1}
    predictor = Predictor(model, meta, device="cpu", tile=64, engine="torch")
    image = np.random.default_rng(0).integers(0, 255, (150, 170), np.uint8)
    asked = []

    def stop_after_two() -> bool:
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(Cancelled):
        predictor.predict(image, should_stop=stop_after_two)
    assert len(asked) == 3  # asked before each batch; the third said stop
    plain = predictor.predict(image)
    never = predictor.predict(image, should_stop=lambda: False)
    assert np.array_equal(plain.classes, never.classes)
