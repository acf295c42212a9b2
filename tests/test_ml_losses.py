"""The loss counts labelled pixels only."""

import pytest
import torch

from segdesk.core.encoding import IGNORE
from segdesk.ml.losses import masked_ce_dice


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_unlabelled_pixels_do_not_change_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16)
    target = torch.randint(0, 3, (2, 16, 16))
    target[:, :8] = IGNORE
    other = logits.clone()
    other[:, :, :8] = torch.randn(2, 3, 8, 16) * 10
    assert torch.allclose(masked_ce_dice(logits, target), masked_ce_dice(other, target))


def test_unlabelled_pixels_get_no_gradient():
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    target = torch.ones(1, 8, 8, dtype=torch.long)
    target[0, :, :4] = IGNORE
    masked_ce_dice(logits, target).backward()
    assert logits.grad[..., :4].abs().max() == 0
    assert logits.grad[..., 4:].abs().max() > 0


def test_no_labelled_pixel_gives_zero_with_grad():
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    target = torch.full((2, 8, 8), IGNORE, dtype=torch.long)
    loss = masked_ce_dice(logits, target)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_right_answer_scores_lower_than_wrong_one():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = 1
    right = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 20
    assert masked_ce_dice(right, target) < 0.01
    assert masked_ce_dice(-right, target) > 1.0
