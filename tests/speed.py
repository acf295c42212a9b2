"""Speed figures for choosing defaults (segdesk.ml.config): step time, forward time, FLOPs."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from segdesk.ml.tiling import autocast
from segdesk.ml.losses import masked_ce_dice
from segdesk.ml.unet import UNet


@dataclass
class Timing:
    seconds: float  # median over the timed repeats (after warm-up)
    flops: float  # counted by torch's FLOP counter (convolutions and matmuls)

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.seconds if self.seconds > 0 else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _median_time(fn, device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _prepare(model: UNet, x: torch.Tensor, device: torch.device) -> tuple[UNet, torch.Tensor]:
    model = model.to(device)
    x = x.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x


def time_training_step(
    model: UNet,
    crop: int = 256,
    batch: int = 4,
    device: torch.device | str = "cpu",
    warmup: int = 2,
    repeats: int = 5,
) -> Timing:
    """Forward, loss, backward and AdamW update on random data (trains ``model`` a little)."""
    device = torch.device(device)
    model, x = _prepare(model.train(), torch.randn(batch, model.in_channels, crop, crop), device)
    y = torch.randint(0, model.n_outputs, (batch, crop, crop), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with autocast(device):
            logits = model(x)
        loss = masked_ce_dice(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        with autocast(device):
            logits = model(x)
        masked_ce_dice(logits, y).backward()
    return Timing(_median_time(step, device, warmup, repeats), float(counter.get_total_flops()))


def time_forward(
    model: UNet,
    height: int = 512,
    width: int = 512,
    device: torch.device | str = "cpu",
    warmup: int = 1,
    repeats: int = 5,
) -> Timing:
    """One eval-mode forward pass of a 1 x C x H x W input."""
    device = torch.device(device)
    model, x = _prepare(model.eval(), torch.randn(1, model.in_channels, height, width), device)

    def forward():
        with torch.inference_mode(), autocast(device):
            model(x)

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return Timing(_median_time(forward, device, warmup, repeats), float(counter.get_total_flops()))
