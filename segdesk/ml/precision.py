"""The number format training computes in: bf16 autocast where the hardware does bf16 natively.

On CPUs with avx512_bf16 or AMX (recent Xeon and EPYC), oneDNN makes a training step 1.5x faster
in bf16 than in fp32 (docs/benchmarks.md, "Training in bf16"), so the model takes more steps while
the user labels. The weights, the optimiser and the loss stay fp32 (autocast), and the model is
judged and exported in fp32, so proposals are computed as before. Elsewhere (laptops without bf16
units, where bf16 is emulated and slower; GPUs before NVIDIA Ampere; MPS) training stays fp32.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch

from segdesk.core.errors import SegdeskError

log = logging.getLogger(__name__)

SETTINGS = ("auto", "bf16", "fp32")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where this CPU computes bf16 in hardware (avx512_bf16 or AMX tiles) and this torch
    trains a convolution block with it (checked once, on a tiny one)."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    native = False
    for check in checks:
        try:
            native = native or bool(check is not None and check())
        except (RuntimeError, AttributeError):
            continue
    if not native:
        return False
    try:
        block = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GroupNorm(2, 4), torch.nn.ReLU())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(torch.randn(1, 3, 8, 8))
        out.float().sum().backward()
    except RuntimeError as exc:  # an unusual build: train in fp32
        log.warning("bf16 training does not work with this torch build (%s); training in fp32", exc)
        return False
    return True


def cuda_has_native_bf16() -> bool:
    """True where the CUDA GPU computes bf16 in hardware (Ampere and later)."""
    try:
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # an older torch without the argument
            return bool(torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError, AttributeError):  # no usable CUDA
        return False


def training_precision(setting: str | None, device: torch.device) -> str:
    """"bf16" or "fp32" for a training ``setting`` (auto, bf16, fp32; None = auto) on ``device``.
    An explicit bf16 on a device that cannot do it raises SegdeskError."""
    text = "auto" if setting is None else str(setting).strip().lower()
    if text not in SETTINGS:
        raise SegdeskError(f"Unknown precision {setting!r}; use {', '.join(SETTINGS)}.")
    device = torch.device(device)
    if text == "bf16" and device.type == "mps":
        raise SegdeskError("bf16 training is not supported on Apple MPS; use precision auto or fp32.")
    if text != "auto":
        return text
    native = (device.type == "cuda" and cuda_has_native_bf16()) or (device.type == "cpu" and cpu_has_native_bf16())
    return "bf16" if native else "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context for a forward pass in ``precision`` ("bf16" or "fp32") on ``device``."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
