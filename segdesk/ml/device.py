"""Which device the model runs on: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import torch

from segdesk.core.errors import SegdeskError

log = logging.getLogger(__name__)

_NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(requested: str | None = None) -> torch.device:
    """The device to use. None or "auto": CUDA, then MPS, then CPU.

    An explicit request ("cuda", "cuda:1", "mps", "cpu") that cannot be met raises SegdeskError
    instead of silently running somewhere slower.
    """
    if requested is None or requested.strip().lower() in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested.strip().lower())
    except (RuntimeError, ValueError) as exc:
        raise SegdeskError(f"Unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps.") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            hint = gpu_problem() or "This computer has no usable NVIDIA GPU."
            raise SegdeskError(f"Device {requested!r} was asked for but CUDA is not available. {hint}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SegdeskError(
                f"Device {requested!r} does not exist: this computer has "
                f"{torch.cuda.device_count()} CUDA device(s), numbered from 0."
            )
    elif device.type == "mps":
        if not _mps_available():
            raise SegdeskError(f"Device {requested!r} was asked for but Apple MPS is not available here.")
    elif device.type != "cpu":
        raise SegdeskError(f"Device {requested!r} is not supported; use auto, cpu, cuda or mps.")
    return device


def device_name(device: torch.device) -> str:
    """A short human-readable name, e.g. "NVIDIA H100 80GB HBM3 (CUDA)" or "CPU (3 threads)"."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'' if n == 1 else 's'})"


def _nvidia_gpu_visible() -> bool:
    try:
        if _NVIDIA_PROC.is_dir() and any(_NVIDIA_PROC.iterdir()):
            return True
    except OSError:
        pass
    try:
        result = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=3, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and "GPU" in result.stdout


def gpu_problem() -> str | None:
    """One sentence with the likely fix when an NVIDIA GPU is present but torch cannot use it."""
    if torch.cuda.is_available() or not _nvidia_gpu_visible():
        return None
    if torch.version.cuda is None:
        return (
            f"An NVIDIA GPU is present but the installed torch {torch.__version__} is a CPU-only "
            "build; install a CUDA build of torch (see pytorch.org) to train on the GPU."
        )
    return (
        f"An NVIDIA GPU is present but torch (built for CUDA {torch.version.cuda}) cannot use it; "
        "the NVIDIA driver is probably too old for this CUDA version: update the driver or install "
        "a torch build for an older CUDA."
    )


def usable_cpus() -> int:
    """Cores this process may run on (container and affinity limits count, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def limit_cpu_threads() -> int:
    """Use all cores but one for torch, so the GUI thread keeps a core; return the thread count."""
    n = max(1, usable_cpus() - 1)
    torch.set_num_threads(n)
    return n
