"""Simulated clicks for training a click-aware U-Net, as RITM and DeepEdit train.

For a batch of training crops, a share (``TrainConfig.click_share``) gets clicks; the rest get empty
prompts and train the automatic proposal. A crop with clicks starts either from a few random clicks
on an empty mask or from nothing, then goes through up to two rounds of: the model predicts (no
gradient), its prediction becomes the previous mask, and the protocol's next click
(segdesk.core.clicks.next_click) goes into the largest error of that prediction. So the clicks the
model learns from are the ones its own mistakes would draw from a user, and it learns to take a
previous mask and change it only where clicked. Corrections a user made with clicks are stored as
labels like any other, so they train this the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from segdesk.core.clicks import Click, next_click, prompt_maps, random_clicks
from segdesk.core.encoding import IGNORE

MAX_ROUNDS = 2  # model-placed clicks per crop: each round is one forward pass without gradient


def simulate_prompts(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, n_classes: int,
                     rng: np.random.Generator, share: float) -> torch.Tensor:
    """B x 3K x H x W prompts for ``images`` (B x 3 x H x W, on the model's device) and their
    ``targets`` (B x H x W class masks, IGNORE where unknown)."""
    b, _, h, w = images.shape
    prompts = np.zeros((b, 3 * n_classes, h, w), np.float32)
    truths = targets.detach().cpu().numpy()
    chosen = [i for i in range(b) if rng.random() < share and (truths[i] > 0).any()]
    if not chosen:
        return torch.from_numpy(prompts).to(images.device)
    clicks: dict[int, list[Click]] = {}
    previous: dict[int, np.ndarray | None] = {}
    for i in chosen:
        valid = truths[i] != IGNORE
        if rng.random() < 0.5:  # a user who starts by clicking on an empty image
            clicks[i] = random_clicks(truths[i], rng, int(rng.integers(1, 3)), int(rng.integers(0, 2)), valid)
        else:  # a user who starts from the automatic proposal
            clicks[i] = []
        previous[i] = None
    rounds = int(rng.integers(0, MAX_ROUNDS + 1))
    if rounds == 0 and any(not clicks[i] for i in chosen):
        rounds = 1  # those starting from the automatic proposal need it predicted once
    was_training = model.training
    for _ in range(rounds):
        for i in chosen:
            prompts[i] = prompt_maps(clicks[i], previous[i], n_classes, (h, w))
        x = torch.cat([images[chosen], torch.from_numpy(prompts[chosen]).to(images.device)], dim=1)
        with torch.no_grad():
            predicted = model(x).argmax(dim=1).to(torch.uint8).cpu().numpy()
        for i, shown in zip(chosen, predicted):
            valid = truths[i] != IGNORE
            click = next_click(shown, np.where(valid, truths[i], 0).astype(np.uint8), valid)
            previous[i] = shown
            if click is not None:
                clicks[i].append(click)
    model.train(was_training)
    for i in chosen:
        prompts[i] = prompt_maps(clicks[i], previous[i], n_classes, (h, w))
    return torch.from_numpy(prompts).to(images.device)
