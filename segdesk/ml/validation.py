"""A model judged on the held-out accepted images at working scale: the Dice that decides which
checkpoint is kept, and the predictions post-processing and the show-or-withhold decision are
chosen from (segdesk.ml.postprocess)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import nn

from segdesk.core.encoding import IGNORE, dice_per_class, mean_dice
from segdesk.ml.tiling import predict_probabilities
from segdesk.ml.uncertainty import uncertainty

TILE = 512
MAX_PAIRS = 32  # held-out predictions kept to choose post-processing from (memory bound)


@dataclass
class Validation:
    dice: float | None = None  # mean over images; None without held-out images or foreground in them
    per_class: list[float | None] | None = None  # over the images showing each class
    pairs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (classes, target), MAX_PAIRS at most
    uncertainties: list[float] = field(default_factory=list)  # one per held-out image (uncertainty.py)


def validate(model: nn.Module, items: Iterable[tuple[object, np.ndarray, np.ndarray]], n_classes: int) -> Validation:
    """Judge ``model`` (in eval mode from here on) on held-out ``items`` of (id, normalised image
    C x H x W, target H x W with IGNORE outside what was held out). Per image,
    segdesk.core.encoding.mean_dice (the benchmarks' Dice; an image where nothing was there and
    nothing was found is skipped)."""
    result = Validation()
    per_image: list[float] = []
    per_class: list[list[float]] = [[] for _ in range(n_classes)]
    model.eval()
    with torch.inference_mode():
        for _, image, target in items:
            x = torch.from_numpy(image)
            if model.prompt_channels:  # the automatic proposal: empty prompts
                x = torch.cat([x, x.new_zeros((model.prompt_channels,) + tuple(x.shape[1:]))])
            probs = predict_probabilities(model, x, TILE)
            confidence, classes = (t.cpu().numpy() for t in probs.max(dim=0))
            counted = target != IGNORE  # of a part-held image, its held-out part only
            result.uncertainties.append(uncertainty(classes[counted], confidence[counted]))
            if len(result.pairs) < MAX_PAIRS:
                result.pairs.append((classes.astype(np.uint8), target.astype(np.int16)))
            truth = np.where(counted, target, 0)
            if truth.any() or (classes * counted).any():
                per_image.append(mean_dice(classes, truth, counted))
            for c, s in enumerate(dice_per_class(classes, truth, n_classes, counted)):
                if s is not None:
                    per_class[c].append(s)
    if per_image:
        result.dice = float(np.mean(per_image))
        result.per_class = [float(np.mean(v)) if v else None for v in per_class]
    return result
