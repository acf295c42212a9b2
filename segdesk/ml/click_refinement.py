"""A click's answer fitted to the clicks: backpropagating refinement of the U-Net's last features
(f-BRS, Sofiiuk et al. 2020), for ``Predictor.refine``.

The network reads the clicks as input channels, but it may still answer a click with a mask the
click contradicts, most often early in a project. Here a per-channel scale and shift of the
decoder's output (32 numbers for the default width, before the 1 x 1 head) are fitted by L-BFGS
(``minimise``) so that the clicked pixels get the class each click says, while pixels the network
was sure of keep their class (without that term one click on a dim nucleus turned a whole window of
nuclei to foreground). Only the head runs in the loop, on the clicked pixels and a sample of the sure
ones, so it costs milliseconds; the network's weights do not change.

Chosen by measurement (docs/benchmarks.md, "Click prompts", sixth round): on three Kvasir
checkpoints, each on 30 polyps it had not seen, 10% fewer clicks to Dice 0.90 (8.83 -> 7.99), nuclei
unchanged; in the loop over three seeds, NoC@90 over images 2-30 9.20 -> 7.92; on EM membranes,
taken near each click only (``reach``), level with the network's answer (Dice after 5 clicks 0.821
against 0.820).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segdesk.core.clicks import CLICK_RADIUS

ITERATIONS = 20  # L-BFGS iterations (f-BRS: 20)
SURE = 0.99  # pixels whose class the network gave with at least this probability keep it...
KEEP_WEIGHT = 1.0  # ...with this weight beside the clicks' own loss, judged on
SURE_SAMPLES = 4096  # at most this many of them, evenly spread (the fit's cost stays a few ms)
REGULARISATION = 1e-3  # on the scale's distance from 1 and the shift's from 0
# The fitted answer is taken near each click only, within REACH x the room the click had (the distance
# to the nearest other class in the mask being corrected): a click on a gap in a thin membrane moved
# the decision for the whole window, and the membranes thickened (EM, in the loop: 0.035 -> 0.037 of
# the outline left after 20 clicks, 0.033 with this limit; offline 1644 / 1477 / 1380 px); a click
# in a missed half of a polyp has room, and the fit reaches the rest.
REACH = 4.0


def click_targets(maps: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the prompt channels (3K x h x w: positives, negatives, previous mask; core/clicks.prompt_maps):
    the clicked pixels (flat indices), the class each names (1..K) and whether it is a positive click."""
    index, classes, positive = [], [], []
    for k in range(n_classes):
        for channel, is_positive in ((k, True), (n_classes + k, False)):
            where = torch.nonzero(maps[channel].reshape(-1) > 0.5).flatten()
            index.append(where)
            classes.append(torch.full_like(where, k + 1))
            positive.append(torch.full(where.shape, is_positive, dtype=torch.bool, device=where.device))
    return torch.cat(index), torch.cat(classes), torch.cat(positive)


def reach(points: list[tuple[int, int]], rooms: list[float], shape: tuple[int, int]) -> np.ndarray:
    """How much of the fitted answer each pixel takes (h x w, 0..1): a Gaussian around each click, REACH
    times as wide as the room the click had (core/clicks.click_room), the largest where they overlap."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    weight = np.zeros(shape, np.float32)
    for (py, px), room in zip(points, rooms):
        width = REACH * max(room, float(CLICK_RADIUS))
        if width >= 4 * max(shape):  # nothing else near: the whole window
            return np.ones(shape, np.float32)
        np.maximum(weight, np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * width**2)), out=weight)
    return weight


def fit_to_clicks(features: torch.Tensor, head: nn.Conv2d, maps: torch.Tensor, n_classes: int,
                  near: np.ndarray | None = None) -> torch.Tensor:
    """Softmax probabilities ((K+1) x h x w) of ``head`` on ``features`` (1 x F x h x w, the decoder's
    output on the window) after the scale and shift fitted to the clicks in ``maps``; with ``near``
    (``reach``), blended with the head's own answer pixel by pixel. Without clicks, the head's own
    answer."""
    weight, bias = head.weight.detach().float().flatten(1), head.bias.detach().float()  # (K+1) x F, K+1
    flat = features.detach().float()[0].flatten(1)  # F x hw
    channels = flat.shape[0]
    with torch.no_grad():
        plain = (weight @ flat + bias[:, None]).softmax(dim=0)  # the head's own answer, (K+1) x hw
    index, classes, positive = click_targets(maps.to(flat.device), n_classes)
    if index.numel() == 0:
        return plain.reshape((-1,) + tuple(features.shape[-2:]))
    confidence, reference = plain.max(dim=0)
    sure = torch.nonzero(confidence >= SURE).flatten()
    sure = sure[:: max(1, -(-sure.numel() // SURE_SAMPLES))]  # an even sample: the loss is a mean
    # the loss needs these pixels only; in float64, so the line search's comparisons near the optimum
    # are not float32's rounding (which made it halve its step 20 times, ~7 losses an iteration)
    selected, n_clicked = flat[:, torch.cat([index, sure])].double(), index.numel()

    def logits(at: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:  # theta: the scale, then the shift
        w, b = weight.to(at.dtype), bias.to(at.dtype)
        return w @ (at * theta[:channels, None] + theta[channels:, None]) + b[:, None]  # (K+1) x n

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        out = logits(selected, theta)
        clicked = out[:, :n_clicked].log_softmax(dim=0)[classes, torch.arange(n_clicked)]  # log p(clicked class)
        # a positive click: -log p(c); a negative one: -log(1 - p(c))
        fit = torch.where(positive, -clicked, -torch.log1p(-clicked.exp().clamp(max=1 - 1e-6))).mean()
        if sure.numel():
            fit = fit + KEEP_WEIGHT * F.cross_entropy(out[:, n_clicked:].T, reference[sure])
        return fit + REGULARISATION * (((theta[:channels] - 1) ** 2).sum() + (theta[channels:] ** 2).sum())

    start = torch.cat([torch.ones(channels), torch.zeros(channels)]).to(flat.device, torch.float64)
    theta = minimise(loss_of, start, ITERATIONS).float()
    with torch.no_grad():
        fitted = logits(flat, theta).softmax(dim=0)
        if near is not None:
            share = torch.from_numpy(near).to(fitted.device).reshape(1, -1)
            fitted = share * fitted + (1 - share) * plain
        return fitted.reshape((-1,) + tuple(features.shape[-2:]))


def minimise(loss_of: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, iterations: int,
             history: int = 10) -> torch.Tensor:
    """L-BFGS (the two-loop recursion) with a backtracking line search, on a few dozen parameters.
    Not torch.optim.LBFGS: any torch.optim optimiser imports torch._dynamo on first use, 2 s and
    0.15 GB that would land on the first click of a session, holding the GIL the window needs."""

    def evaluate(at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            at = at.detach().requires_grad_(True)
            loss = loss_of(at)
            (gradient,) = torch.autograd.grad(loss, at)
        return loss.detach(), gradient

    loss, gradient = evaluate(theta)
    pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (s, y, 1 / y.s)
    for _ in range(iterations):
        direction = -gradient
        alphas = []
        for s, y, rho in reversed(pairs):
            alpha = rho * s.dot(direction)
            direction = direction - alpha * y
            alphas.append(alpha)
        if pairs:
            s, y, _ = pairs[-1]
            direction = direction * (s.dot(y) / y.dot(y))
        for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
            direction = direction + s * (alpha - rho * y.dot(direction))
        slope = gradient.dot(direction)
        if slope >= 0:  # not a descent direction: start the history again
            pairs.clear()
            direction, slope = -gradient, -gradient.dot(gradient)
        if -slope < 1e-12 or float(gradient.abs().max()) < 1e-7:  # at the optimum
            break
        step = 1.0 if pairs else min(1.0, 1.0 / float(gradient.abs().sum()))
        for _ in range(20):
            candidate = theta + step * direction
            new_loss, new_gradient = evaluate(candidate)
            if new_loss <= loss + 1e-4 * step * slope:  # Armijo: enough decrease
                break
            step /= 2
        else:
            break
        s, y = candidate - theta, new_gradient - gradient
        if s.dot(y) > 1e-10:
            pairs = (pairs + [(s, y, 1.0 / y.dot(s))])[-history:]
        theta, loss, gradient = candidate, new_loss, new_gradient
    return theta.detach()
