"""Device choice and the GPU-present-but-unusable hint."""

import pytest
import torch

from segdesk.core.errors import SegdeskError
from segdesk.ml import device as device_mod
from segdesk.ml.device import device_name, gpu_problem, limit_cpu_threads, pick_device


def test_cpu_and_auto():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type in ("cuda", "mps", "cpu")
    assert pick_device("auto") == pick_device(None)


def test_unavailable_device_is_a_clear_error():
    if not torch.cuda.is_available():
        with pytest.raises(SegdeskError, match="CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(SegdeskError, match="use auto, cpu"):
        pick_device("tpu-ish")


def test_device_name_for_cpu():
    before = torch.get_num_threads()
    try:
        n = limit_cpu_threads()
        assert n >= 1 and torch.get_num_threads() == n
        assert device_name(torch.device("cpu")) == f"CPU ({n} thread{'' if n == 1 else 's'})"
        torch.set_num_threads(1)
        assert device_name(torch.device("cpu")) == "CPU (1 thread)"
    finally:
        torch.set_num_threads(before)


def test_gpu_problem_names_the_cuda_build(monkeypatch):
    monkeypatch.setattr(device_mod, "_nvidia_gpu_visible", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = gpu_problem()
    assert message is not None
    assert (torch.version.cuda or "CPU-only") in message


def test_no_gpu_no_problem(monkeypatch):
    monkeypatch.setattr(device_mod, "_nvidia_gpu_visible", lambda: False)
    assert gpu_problem() is None
