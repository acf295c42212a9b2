"""Export a checkpoint's U-Net to ONNX, beside its weights (``models/0001.onnx``).

The CPU proposals run through ONNX Runtime when this file exists (onnx_engine.py): on the
development machine it is 3-4x faster than torch's fp32 path with the same float32 arithmetic
(docs/benchmarks.md, ``segdesk bench latency``). The training worker exports at save time, so the
GUI side never pays for an export.

The graph has two outputs: the logits, and the decoder's output before the 1 x 1 head (a click's
answer is fitted on it; a run asks for one of them). What is exported is the network without
``UNet.forward``'s input check and padding: the traced ``if pad_h or pad_w`` would freeze to the
export's own input size. The engine pads as ``UNet.forward`` does (``onnx_engine.pad_input``), and
the graph has dynamic batch, height and width.
The file carries the SHA-256 of the checkpoint's weights; the engine refuses a file whose hash is not
its checkpoint's (a stale export beside a re-used id).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from segdesk.core import storage
from segdesk.ml.unet import UNet

log = logging.getLogger(__name__)

OPSET = 18
INPUT, OUTPUT = "image", "logits"
FEATURES = "features"  # the decoder's output, which a click's answer is fitted on (click_refinement.py)
WEIGHTS_KEY = "segdesk_weights_sha256"  # metadata_props key: the checkpoint the graph was made from
DEPTH_KEY = "segdesk_depth"  # the engine pads the input to a multiple of 2**depth


class _Network(nn.Module):
    """The U-Net's layers on an input whose sides are multiples of 2**depth."""

    def __init__(self, unet: UNet):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.unet
        features = u.decoder(u.encoder(x))
        return u.head(features), features


def to_onnx_bytes(model: UNet, weights_sha256: str | None = None) -> bytes:
    """The serialised ONNX graph of ``model`` (a CPU copy is exported; ``model`` is left as it is)."""
    import onnx

    copy = UNet.from_arch(model.arch_dict())
    copy.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()})
    network = _Network(copy).eval()
    side = 2**model.depth * 2
    example = torch.zeros((1, model.input_channels, side, side))
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, every time
        # dynamo=False: the TorchScript exporter takes ~1 s here, the dynamo one ~10 s of the
        # training thread's time per checkpoint, for the same graph speed under ONNX Runtime
        torch.onnx.export(
            network, (example,), buffer, dynamo=False, opset_version=OPSET,
            input_names=[INPUT], output_names=[OUTPUT, FEATURES],
            dynamic_axes={name: {0: "n", 2: "h", 3: "w"} for name in (INPUT, OUTPUT, FEATURES)},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    props = {DEPTH_KEY: str(model.depth)}
    if weights_sha256:
        props[WEIGHTS_KEY] = weights_sha256
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def export(model: UNet, path: str | Path, weights_sha256: str | None = None) -> Path:
    """Write the ONNX file atomically (temporary file, then rename); StorageError if the disk fails."""
    path = Path(path)
    storage.atomic_write_bytes(path, to_onnx_bytes(model, weights_sha256))
    log.info("exported %s", path.name)
    return path
