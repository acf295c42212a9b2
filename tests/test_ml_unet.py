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
    with pytest.raises(ValueError, match="3 image channels, got 1.*to_model_input"):
        model(torch.randn(1, 1, 32, 32))
    clicks = UNet(in_channels=3, n_outputs=2, depth=2, base_width=4, prompt_channels=3)
    with pytest.raises(ValueError, match="3 image channels and 3 prompt channels, got 3"):
        clicks(torch.randn(1, 3, 32, 32))


def test_a_model_widened_for_clicks_proposes_as_before_until_trained():
    model = UNet(n_outputs=3, depth=2, base_width=4).eval()
    x = torch.randn(2, 3, 32, 32)
    wider = model.with_prompts(6).eval()
    assert wider.arch_dict()["prompt_channels"] == 6 and wider.input_channels == 9
    with torch.no_grad():
        same = wider(torch.cat([x, torch.zeros(2, 6, 32, 32)], dim=1))
        clicked = wider(torch.cat([x, torch.ones(2, 6, 32, 32)], dim=1))
        torch.testing.assert_close(same, model(x), atol=1e-5, rtol=1e-5)
    assert torch.equal(same, clicked)  # the new inputs start with zero weights
    assert UNet.from_arch(wider.arch_dict()).input_channels == 9
    old = model.arch_dict()
    del old["prompt_channels"]  # a checkpoint from before clicks
    assert UNet.from_arch(old).prompt_channels == 0


def test_wrong_rank_says_how_to_fix():
    model = UNet(depth=2, base_width=4)
    with pytest.raises(ValueError, match="unsqueeze"):
        model(torch.randn(3, 32, 32))


def test_arch_round_trip():
    model = UNet(in_channels=3, n_outputs=3, depth=3, base_width=6)
    arch = model.arch_dict()
    assert arch == {"name": "unet", "in_channels": 3, "n_outputs": 3, "depth": 3, "base_width": 6, "prompt_channels": 0}
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
