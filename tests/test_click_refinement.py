"""A click's answer fitted to the clicks (ml/click_refinement.py), on features whose answer can be
worked out by hand: logit(class 1) - logit(background) = 20 x (feature - 0.5)."""

import numpy as np
import torch
from torch import nn

from segdesk.core.clicks import Click, prompt_maps
from segdesk.ml.click_refinement import fit_to_clicks


def head_and_features(middle: float, height: int = 30) -> tuple[nn.Conv2d, torch.Tensor]:
    """A height x 30 window in three bands of columns: the left sure of class 1 (feature 0.9, logit
    margin +8), the middle unsure (``middle``), the right sure of background (0.0: margin -10)."""
    head = nn.Conv2d(2, 2, kernel_size=1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[1, 0] = 20.0  # class 1's logit from feature 0; the second feature is unused
        head.bias[1] = -10.0
    features = torch.zeros((1, 2, height, 30))
    features[0, 0, :, :10] = 0.9
    features[0, 0, :, 10:20] = middle
    features[0, 1] = 1.0
    return head, features


def classes_after(click: Click, middle: float) -> np.ndarray:
    head, features = head_and_features(middle)
    maps = torch.from_numpy(prompt_maps([click], None, 1, (30, 30)))
    probabilities = fit_to_clicks(features, head, maps, n_classes=1)
    assert probabilities.shape == (2, 30, 30)
    assert torch.allclose(probabilities.sum(dim=0), torch.ones(30, 30), atol=1e-5)
    return probabilities.argmax(dim=0).numpy()


def test_a_positive_click_on_an_unsure_part_takes_all_of_it_and_keeps_what_was_sure():
    """Unfitted, the middle band is background (margin -1); one positive click in it turns the whole
    band to class 1 (the fit moves the decision, not one pixel), while the band the network was sure
    was background stays background."""
    classes = classes_after(Click(15, 15, 1, True), middle=0.45)
    assert (classes[:, :10] == 1).all()
    assert (classes[:, 10:20] == 1).all()
    assert (classes[:, 20:] == 0).all()


def test_a_negative_click_on_an_unsure_part_clears_it_and_keeps_what_was_sure():
    classes = classes_after(Click(15, 15, 1, False), middle=0.55)
    assert (classes[:, :10] == 1).all()
    assert (classes[:, 10:] == 0).all()


def test_without_clicks_the_answer_is_the_heads_own():
    head, features = head_and_features(0.45)
    probabilities = fit_to_clicks(features, head, torch.zeros((3, 30, 30)), n_classes=1)
    assert torch.allclose(probabilities, head(features).softmax(dim=1)[0], atol=1e-6)


def test_the_fit_leaves_the_network_as_it_was():
    head, features = head_and_features(0.45)
    weight = head.weight.detach().clone()
    fit_to_clicks(features, head, torch.from_numpy(prompt_maps([Click(15, 15, 1, True)], None, 1, (30, 30))), 1)
    assert torch.equal(head.weight, weight) and head.weight.grad is None


def test_the_fit_reaches_the_minimum_of_a_badly_scaled_bowl():
    from segdesk.ml.click_refinement import minimise

    scales = torch.tensor([1.0, 10.0, 100.0, 0.1], dtype=torch.float64)
    target = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    found = minimise(lambda t: (scales * (t - target) ** 2).sum(),
                     torch.zeros(4, dtype=torch.float64), iterations=30)
    assert torch.allclose(found, target, atol=1e-4)


def test_the_first_click_of_a_session_imports_nothing_heavy():
    """torch.optim's optimisers import torch._dynamo on first use (2 s and 0.15 GB here), which would
    hold the GIL, and so the window, on the session's first click; the fit has its own L-BFGS."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from tests.test_click_refinement import classes_after\n"
        "from segdesk.core.clicks import Click\n"
        "assert (classes_after(Click(15, 15, 1, True), 0.45)[:, 10:20] == 1).all()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_click_with_little_room_changes_the_answer_near_it_only():
    """A click next to another class (a gap in a thin membrane) had little room: the fitted answer is
    taken near it, and the rest of the unsure band keeps the network's class; a click with nothing
    else near it takes the fitted answer everywhere."""
    from segdesk.ml.click_refinement import reach

    head, features = head_and_features(0.45, height=90)
    maps = torch.from_numpy(prompt_maps([Click(45, 15, 1, True)], None, 1, (90, 30)))
    near = reach([(45, 15)], [2.0], (90, 30))
    classes = fit_to_clicks(features, head, maps, 1, near).argmax(dim=0).numpy()
    assert (classes[40:51, 10:20] == 1).all()
    assert (classes[:10, 10:20] == 0).all() and (classes[-10:, 10:20] == 0).all()
    assert (classes[:, 20:] == 0).all() and (classes[:, :10] == 1).all()
    assert np.array_equal(reach([(45, 15)], [1e38], (90, 30)), np.ones((90, 30), np.float32))
