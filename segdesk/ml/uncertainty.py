"""How unsure a proposal is, in one number per image: which image to label next (active learning).

``uncertainty(classes, confidence)`` is the mean of ``1 - confidence`` over the pixels where
something other than sure background is going on: pixels predicted as a class, and pixels predicted
as background with a confidence below ``SURE``. Why not over the whole image: in most medical images
the structure covers a few per cent of the pixels, and the confidently empty background (1 -
confidence near 0) would dominate a whole-image mean (or mean entropy), so an image with a small
object the model hesitates on would rank as surer than one with a large, well-found object. Over
the region, the number says how sure the model is of what it found and of where it hesitated.

Values lie in [0, 1 - 1/C] for C classes plus background (0.5 with one class); 0.0 when the model
is sure every pixel is background. Small objects rank somewhat less sure than large ones of the
same quality (their boundary, always hesitant, is a larger share of them); between images of one
project that is a mild bias, and the images it favours are the ones a clinician corrects most.

numpy only: the bench and the inference worker call it on a ``Prediction``'s arrays.
"""

from __future__ import annotations

import numpy as np

SURE = 0.9  # a background pixel at least this confident takes no part in the mean


def uncertainty(classes: np.ndarray, confidence: np.ndarray) -> float:
    """``classes``: H x W, 0 = background, 1..K (a Prediction's ``classes``); ``confidence``: H x W,
    the winning class's probability. Higher = less sure; rounded to 4 decimals."""
    total = UncertaintySum()
    total.add(classes, confidence)
    return total.value()


class UncertaintySum:
    """``uncertainty`` of an image given a strip at a time (an image too large for a whole confidence map)."""

    def __init__(self) -> None:
        self.unsure = 0.0
        self.pixels = 0

    def add(self, classes: np.ndarray, confidence: np.ndarray) -> None:
        classes = np.asarray(classes)
        confidence = np.asarray(confidence, dtype=np.float32)
        if classes.shape != confidence.shape:
            raise ValueError(f"classes {classes.shape} and confidence {confidence.shape} differ in shape")
        region = (classes != 0) | (confidence < SURE)
        n = int(np.count_nonzero(region))
        if n:
            self.unsure += float(np.sum(1.0 - confidence[region], dtype=np.float64))
            self.pixels += n

    def value(self) -> float:
        return round(self.unsure / self.pixels, 4) if self.pixels else 0.0
