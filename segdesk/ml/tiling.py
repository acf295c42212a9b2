"""A whole input through the network in pieces: one piece when it fits a batch of tiles, else
overlapping tiles whose softmax outputs are blended by a raised-cosine window (no seams)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from segdesk.ml import precision, streaming

DEFAULT_TILE = 512
TILE_BATCH = 4  # tiles per forward pass
OVERLAP = 0.25
_WINDOW_FLOOR = 0.01  # blending weights never reach zero, so every pixel has a defined average


def autocast(device: torch.device):
    """Proposals in bf16 on CUDA, fp32 elsewhere (CPU bf16 masks did not agree with fp32's closely
    enough, docs/benchmarks.md "Latency"; MPS patchy)."""
    return precision.autocast(device, "bf16" if device.type == "cuda" else "fp32")


def tile_boxes(h: int, w: int, tile: int = DEFAULT_TILE,
               tile_batch: int = TILE_BATCH) -> list[tuple[int, int, int, int]]:
    """(y, x, height, width) of the pieces an h x w input is predicted in: one piece when it has no
    more pixels than one batch of tiles (the same memory, and overlapping tiles would cost up to 2.25x
    the compute: a 1024 px image is 9 tiles of 512), else overlapping tiles."""
    if h * w <= tile * tile * tile_batch:
        return [(0, 0, h, w)]
    th, tw = min(tile, h), min(tile, w)
    return [(y, x, th, tw) for y in streaming.tile_starts(h, th, OVERLAP)
            for x in streaming.tile_starts(w, tw, OVERLAP)]


def window(h: int, w: int, device: torch.device) -> torch.Tensor:
    """2D raised-cosine window, highest in the middle, floored above zero at the borders."""

    def one_d(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float32, device=device)
        return (0.5 - 0.5 * torch.cos(2 * math.pi * (i + 0.5) / n)).clamp(min=_WINDOW_FLOOR)

    return one_d(h)[:, None] * one_d(w)[None, :]


def predict_probabilities(
    model: nn.Module, image: torch.Tensor, tile: int = DEFAULT_TILE, tile_batch: int = TILE_BATCH,
    logits_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Softmax probabilities (C x H x W, float32, on the model's device) for one 3 x H x W input.

    The caller puts the model in eval mode and inference mode. The pieces come from
    ``tile_boxes``; overlapping tiles are blended by a cosine window. ``logits_of`` replaces
    ``model(batch)`` (another engine for the same model: onnx_engine.py).
    """
    device = next(model.parameters()).device
    run = logits_of or model
    x = image.to(device=device, dtype=torch.float32)[None]
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    _, _, h, w = x.shape
    pieces = tile_boxes(h, w, tile, tile_batch)
    if len(pieces) == 1:
        with autocast(device):
            logits = run(x)
        return logits.float().softmax(dim=1)[0]

    _, _, th, tw = pieces[0]
    blend = window(th, tw, device)
    boxes = [(y, x0) for y, x0, _, _ in pieces]
    total = None
    weight = torch.zeros((h, w), dtype=torch.float32, device=device)
    for i in range(0, len(boxes), tile_batch):
        chunk = boxes[i : i + tile_batch]
        batch = torch.cat([x[:, :, y : y + th, x0 : x0 + tw] for y, x0 in chunk])
        with autocast(device):
            logits = run(batch)
        probs = logits.float().softmax(dim=1)
        if total is None:
            total = torch.zeros((probs.shape[1], h, w), dtype=torch.float32, device=device)
        for (y, x0), p in zip(chunk, probs):
            total[:, y : y + th, x0 : x0 + tw] += p * blend
            weight[y : y + th, x0 : x0 + tw] += blend
    return total / weight
