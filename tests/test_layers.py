"""DESIGN.md layers: core imports neither Qt nor torch; ml never imports Qt. A leak fails CI."""

import subprocess
import sys

import pytest

CHECK = """
import sys, importlib, pkgutil
import segdesk.{layer} as pkg
for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    importlib.import_module(m.name)
bad = sorted(n for n in sys.modules if n.split(".")[0] in {banned})
print(",".join(bad))
"""


@pytest.mark.parametrize(
    "layer, banned",
    [("core", {"PySide6", "torch", "torchvision"}), ("ml", {"PySide6", "shiboken6"})],
)
def test_layer_imports_nothing_banned(layer, banned):
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(layer=layer, banned=sorted(banned))],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert out == "", f"segdesk.{layer} imports {out}"


def test_torch_and_torchvision_are_a_matching_pair():
    import torch
    import torchvision
    from torchvision.ops import nms  # fails when torchvision was built for another torch

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
    assert torchvision.__version__
