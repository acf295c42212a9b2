"""The U-Net's shape contract and input errors."""

import pytest
import torch

from segdesk.ml.unet import UNet


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 3, 64, 64), (1, 3, 5, 7), (1, 3, 1, 1)])
def test_any_size_in_same_size_out(shape):
    model = UNet(in_channels=3, n_outputs=4, depth=3, base_width=4)
    out = model(torch.randn(shape))
    assert out.shape == (shape[0], 4, shape[2], shape[3])


def test_trains_at_batch_size_one():
    model = UNet(n_outputs=2, depth=2, base_width=4).train()
    out = model(torch.randn(1, 3, 16, 16))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_wrong_channel_count_says_how_to_fix():
    model = UNet(in_channels=3, n_outputs=2, depth=2, base_width=4)
    with pytest.raises(ValueError, match="3 input channels.*to_model_input"):
        model(torch.randn(1, 1, 32, 32))


def test_wrong_rank_says_how_to_fix():
    model = UNet(depth=2, base_width=4)
    with pytest.raises(ValueError, match="unsqueeze"):
        model(torch.randn(3, 32, 32))


def test_arch_round_trip():
    model = UNet(in_channels=3, n_outputs=3, depth=3, base_width=6)
    arch = model.arch_dict()
    assert arch == {"name": "unet", "in_channels": 3, "n_outputs": 3, "depth": 3, "base_width": 6}
    copy = UNet.from_arch(arch)
    copy.load_state_dict(model.state_dict())  # same parameter names and shapes
    assert copy.widths == [6, 12, 24, 48]


def test_speed_figures():
    from tests.speed import time_forward, time_training_step

    model = UNet(n_outputs=2, depth=2, base_width=4)
    forward = time_forward(model, 32, 48, warmup=0, repeats=1)
    step = time_training_step(model, crop=32, batch=1, warmup=0, repeats=1)
    assert forward.seconds > 0 and forward.flops > 0 and forward.flops_per_s > 0
    assert step.flops > 2 * forward.flops * 32 * 32 / (32 * 48)  # backward costs about twice forward
