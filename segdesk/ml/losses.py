"""Loss on labelled pixels only: cross-entropy plus soft Dice.

Unlabelled pixels (target ``IGNORE``) carry no information (the user has not painted them), so they
contribute to neither term. Dice is computed over the whole batch ("batch Dice", as nnU-Net) for the
foreground classes 1..K; background is covered by cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segdesk.core.encoding import IGNORE
_SMOOTH = 1e-5


def masked_ce_dice(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Scalar loss for N x C x H x W logits and N x H x W int64 targets (``IGNORE`` = unlabelled).

    A batch with no labelled pixel gives 0 (still attached to the graph), never NaN.
    """
    logits = logits.float()
    labelled = target != IGNORE
    n_labelled = labelled.sum().clamp(min=1)
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum") / n_labelled
    if dice_weight == 0 or logits.shape[1] < 2:
        return ce

    mask = labelled.unsqueeze(1).to(logits.dtype)  # N x 1 x H x W
    probs = logits.softmax(dim=1) * mask
    truth = F.one_hot(target.clamp(min=0), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype) * mask
    dims = (0, 2, 3)
    intersection = (probs * truth).sum(dims)[1:]
    total = (probs.sum(dims) + truth.sum(dims))[1:]
    dice = (2 * intersection + _SMOOTH) / (total + _SMOOTH)
    return ce + dice_weight * (1 - dice.mean())
