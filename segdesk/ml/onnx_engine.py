"""ONNX Runtime on the CPU: a U-Net's logits for a batch of tiles, from the checkpoint's ``.onnx``.

Chosen by measurement (``segdesk bench latency``, docs/benchmarks.md): float32 like torch, so the
masks agree with torch's, and 3-4x faster than torch's fp32 CPU path on the development machine.
The Predictor (inference.py) calls ``OnnxEngine.logits`` where it would call the model; tiling,
blending, working scale and post-processing stay the same code.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segdesk.core.errors import CheckpointError
from segdesk.ml.export_onnx import DEPTH_KEY, FEATURES, INPUT, OUTPUT, WEIGHTS_KEY

log = logging.getLogger(__name__)

NAME = "onnxruntime"


def available() -> bool:
    """True when onnxruntime imports (it is a dependency, but a broken install must not stop proposals)."""
    try:
        import onnxruntime  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a native library that fails to load
        return False
    return True


def pad_input(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom and right to a multiple of ``multiple``, exactly as ``UNet.forward`` does."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "constant"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x


class OnnxEngine:
    """One ONNX Runtime session. CheckpointError when the file is missing, damaged or not the checkpoint's."""

    def __init__(self, path: str | Path, weights_sha256: str | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads or torch.get_num_threads())  # as torch: the app's limit
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no memory pattern (one planned block per run for every intermediate tensor): tensors come
        # and go in the arena as the graph runs, 27% fewer peak bytes (0.92 -> 0.66 GB at 1024 px,
        # 0.22 -> 0.16 at 512) for the same speed (1.19 against 1.18 s at 1024 px, 1 thread)
        options.enable_mem_pattern = False
        # idle pool threads must not spin: training shares the cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only; warnings go through our log below
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            props = self.session.get_modelmeta().custom_metadata_map
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for every kind of damage
            raise CheckpointError(f"{self.path.name} is not a usable ONNX model: {_first_line(exc)}") from exc
        if weights_sha256 and props.get(WEIGHTS_KEY) != weights_sha256:
            raise CheckpointError(f"{self.path.name} was exported from other weights than its checkpoint.")
        try:
            self.multiple = 2 ** int(props[DEPTH_KEY])
        except (KeyError, ValueError, OverflowError):
            raise CheckpointError(f"{self.path.name} was not exported by segdesk (no U-Net depth).") from None
        self.threads = options.intra_op_num_threads
        shape = self.session.get_inputs()[0].shape
        self._channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else None
        # exports before the click fit have logits only: their clicks take the features from torch
        self.has_features = FEATURES in {output.name for output in self.session.get_outputs()}

    @staticmethod
    def run_options():
        """Options for ``logits`` that another thread can end a run with (``.terminate = True``: the
        run stops within one operator and raises)."""
        import onnxruntime as ort

        return ort.RunOptions()

    def release(self) -> None:
        """Hand the working memory of earlier runs back (ONNX Runtime's arena keeps the largest run's
        activations for the session's life: 0.26 GB after a 512 px tile, 0.7 GB after a 1024 px image,
        beside the next image however large). A tiny run that shrinks the arena as it ends: ~20 ms.
        Shrinking after every run instead cost 13% of a 1024 px proposal (1.47 against 1.31 s)."""
        import onnxruntime as ort

        if self._channels is None:
            return
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        tiny = np.zeros((1, self._channels, self.multiple, self.multiple), np.float32)
        try:
            self.session.run([OUTPUT], {INPUT: tiny}, options)
        except Exception as exc:  # noqa: BLE001 - memory not handed back is no reason to fail a proposal
            log.debug("ONNX Runtime's arena not shrunk: %s", exc)

    def logits(self, x: torch.Tensor, run_options=None) -> torch.Tensor:
        """N x C x H x W float32 logits for an N x 3 x H x W float32 CPU batch, like ``UNet(x)``."""
        return self._run(OUTPUT, x, run_options)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's output for a batch, like ``UNet.features(x)`` (``has_features`` exports only)."""
        return self._run(FEATURES, x)

    def _run(self, output: str, x: torch.Tensor, run_options=None) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = pad_input(x, self.multiple)
        array = np.ascontiguousarray(padded.numpy(), dtype=np.float32)
        out = self.session.run([output], {INPUT: array}, run_options)[0]
        return torch.from_numpy(out)[..., :height, :width]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:200] if text else type(exc).__name__) + ("" if text and text[0].endswith(".") else ".")
