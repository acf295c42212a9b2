"""An exponential moving average of a model's weights (EMA), the model that is judged and kept.

With a few labelled images each step's weights swing with the batch it saw: validation Dice of
the raw weights jumps by 0.1-0.3 from one validation to the next on two held-out images (Kvasir,
docs/benchmarks.md), and keeping the best of such jumps kept a lucky model for ten images. The
average of the last ~1/(1 - decay) steps' weights moves with the labels but not with the batches.
Training goes on in the raw weights; validation, checkpoints and their ONNX export use the average.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

_WARM_UP = 10  # early on the average follows the weights closely: decay (1 + n) / (10 + n)


class WeightAverage:
    """The running average of ``model``'s parameters; ``decay`` 0 means no averaging (``model``
    is then judged itself). The U-Net has no buffers (GroupNorm), so parameters are all there is."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"The weight-average decay must be in [0, 1), not {decay}.")
        self.decay = decay
        self.updates = 0
        if decay == 0.0:
            self.model = model
            self._pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
            return
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._pairs = (list(self.model.parameters()), list(model.parameters()))

    def update(self) -> None:
        """Fold the trained model's current weights in (after each optimizer step)."""
        if self._pairs is None:
            return
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (_WARM_UP + self.updates))
        averaged, current = self._pairs
        with torch.no_grad():
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
