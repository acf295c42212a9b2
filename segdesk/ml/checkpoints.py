"""Immutable numbered checkpoints in ``models/``, plus a pointer to the current one.

::

    models/0001.safetensors   weights (safetensors: loading cannot run code)
    models/0001.json          metadata; written last, so its presence marks a complete checkpoint
    models/current.json       {"id": "0001"}
    models/0001.onnx          the same network for ONNX Runtime (export_onnx.py), for CPU proposals;
                              optional (an export that fails only logs), written before the metadata
                              so that whoever sees the checkpoint sees its export too

Every file is written atomically. Loading refuses anything that is not safetensors without
unpickling it, and checks the weights against the SHA-256 recorded in the metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from segdesk.core import storage
from segdesk.core.errors import CheckpointError, SegdeskError
from segdesk.ml.normalise import NORMALISATION
from segdesk.ml.unet import ARCH_NAME

log = logging.getLogger(__name__)

POINTER = "current.json"
_ID_RE = re.compile(r"^\d{4,}$")
_PICKLE_PROTO = b"\x80"  # pickle protocol 2+ opcode; also the legacy torch.save format
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip format (a pickle inside)
_UNSAFE = "contains a pickle payload; segdesk loads only safetensors"


def _check_id(checkpoint_id: str) -> str:
    checkpoint_id = str(checkpoint_id)
    if not _ID_RE.match(checkpoint_id):
        raise CheckpointError(f"{checkpoint_id!r} is not a checkpoint id (expected digits like 0001).")
    return checkpoint_id


def _json_safe(value):
    """Metadata must be strict JSON: NaN and infinities become None, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if getattr(value, "ndim", None) == 0:  # numpy or torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class CheckpointStore:
    """The checkpoints of one project. Only the training worker writes; anyone may read."""

    def __init__(self, models_dir: str | Path):
        self.dir = Path(models_dir)

    def _weights_path(self, checkpoint_id: str) -> Path:
        return self.dir / f"{checkpoint_id}.safetensors"

    def _meta_path(self, checkpoint_id: str) -> Path:
        return self.dir / f"{checkpoint_id}.json"

    def onnx_path(self, checkpoint_id: str) -> Path:
        """Where the checkpoint's ONNX export lies (it may not exist: export is best effort)."""
        return self.dir / f"{_check_id(checkpoint_id)}.onnx"

    def _next_id(self) -> str:
        numbers = [int(p.stem) for p in self.dir.glob("*") if _ID_RE.match(p.stem)]
        return f"{max(numbers, default=0) + 1:04d}"

    # ----- writing

    def save(self, state_dict: dict[str, torch.Tensor], meta: dict, onnx_model: torch.nn.Module | None = None) -> str:
        """Write a new checkpoint, make it current, return its id. StorageError if the disk fails.
        ``onnx_model`` (the U-Net the weights come from) is also exported to ONNX, best effort."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"Could not create the models folder {self.dir}: {exc.strerror or exc}.") from exc
        checkpoint_id = self._next_id()
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        data = save_safetensors(tensors, metadata={"format": "pt", "segdesk_id": checkpoint_id})
        storage.atomic_write_bytes(self._weights_path(checkpoint_id), data)
        sha256 = hashlib.sha256(data).hexdigest()
        if onnx_model is not None:
            self._export_onnx(checkpoint_id, onnx_model, sha256)
        full_meta = {
            **meta,
            "id": checkpoint_id,
            "created": round(time.time(), 3),
            "created_iso": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "weights_sha256": sha256,
            "weights_bytes": len(data),
        }
        try:
            storage.atomic_write_json(self._meta_path(checkpoint_id), _json_safe(full_meta))  # commit mark
        except SegdeskError:  # e.g. the disk filled up: leave no weights without their metadata
            with contextlib.suppress(OSError):
                self._weights_path(checkpoint_id).unlink()
            with contextlib.suppress(OSError):
                self.onnx_path(checkpoint_id).unlink(missing_ok=True)
            raise
        self.set_current(checkpoint_id)
        log.info("saved checkpoint %s", checkpoint_id)
        return checkpoint_id

    def _export_onnx(self, checkpoint_id: str, model: torch.nn.Module, weights_sha256: str) -> None:
        """A failed export costs the checkpoint its fast CPU proposals, never the checkpoint: logged."""
        path = self.onnx_path(checkpoint_id)
        try:
            path.unlink(missing_ok=True)  # a stale export of an earlier checkpoint with this id
            self.save_onnx(checkpoint_id, model, weights_sha256)
        except Exception:  # noqa: BLE001 - torch.onnx raises many types; proposals fall back to torch
            log.warning("checkpoint %s: ONNX export failed; its CPU proposals run through torch",
                        checkpoint_id, exc_info=True)

    def save_onnx(self, checkpoint_id: str, model: torch.nn.Module, weights_sha256: str | None = None) -> Path:
        """Export ``model`` (the checkpoint's U-Net) beside the checkpoint, atomically, stamped with
        its weights hash (default: from its metadata). Raises on failure."""
        from segdesk.ml import export_onnx

        if weights_sha256 is None:
            weights_sha256 = self._read_meta(_check_id(checkpoint_id)).get("weights_sha256")
        return export_onnx.export(model, self.onnx_path(checkpoint_id), weights_sha256)

    def set_current(self, checkpoint_id: str) -> None:
        checkpoint_id = _check_id(checkpoint_id)
        if not (self._meta_path(checkpoint_id).is_file() and self._weights_path(checkpoint_id).is_file()):
            raise CheckpointError(f"Checkpoint {checkpoint_id} does not exist or is incomplete.")
        storage.atomic_write_json(self.dir / POINTER, {"id": checkpoint_id})

    # ----- reading

    def _read_meta(self, checkpoint_id: str) -> dict:
        path = self._meta_path(checkpoint_id)
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"Checkpoint {checkpoint_id} does not exist (no {path.name}).") from None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise CheckpointError(f"Checkpoint {checkpoint_id} has unreadable metadata {path.name}: {exc}.") from exc
        if not isinstance(meta, dict):
            raise CheckpointError(f"Checkpoint {checkpoint_id} has malformed metadata {path.name}.")
        return meta

    def list(self) -> list[dict]:
        """Metadata of the complete checkpoints, oldest first."""
        found = []
        for path in self.dir.glob("*.json"):
            if not _ID_RE.match(path.stem) or not self._weights_path(path.stem).is_file():
                continue
            try:
                meta = self._read_meta(path.stem)
            except CheckpointError as exc:
                log.warning("%s", exc)
                continue
            found.append({**meta, "id": path.stem})
        return sorted(found, key=lambda m: int(m["id"]))

    def current_id(self) -> str | None:
        """The id the pointer names (it may not load: see ``load_current``), or None."""
        try:
            pointer = json.loads((self.dir / POINTER).read_text(encoding="utf-8"))
            return _check_id(pointer["id"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, SegdeskError) as exc:
            log.warning("ignoring unreadable checkpoint pointer %s: %s", self.dir / POINTER, exc)
            return None

    def load(self, checkpoint_id: str) -> tuple[dict[str, torch.Tensor], dict]:
        """(state_dict on CPU, metadata). CheckpointError if missing, truncated, corrupt or unsafe."""
        checkpoint_id = _check_id(checkpoint_id)
        meta = self._read_meta(checkpoint_id)
        path = self._weights_path(checkpoint_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"Checkpoint {checkpoint_id} has no weights file {path.name}.") from None
        except OSError as exc:
            raise CheckpointError(f"Could not read {path.name}: {exc.strerror or exc}.") from exc
        if data.startswith(_PICKLE_PROTO) or data.startswith(_ZIP_MAGIC):
            raise CheckpointError(f"{path.name} {_UNSAFE}; it was not loaded.")
        expected = meta.get("weights_sha256")
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise CheckpointError(f"{path.name} is corrupt or truncated (its checksum does not match).")
        try:
            state_dict = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
            raise CheckpointError(f"{path.name} is not a readable safetensors file: {exc}.") from exc
        return state_dict, meta

    def load_current(self) -> tuple[str, dict[str, torch.Tensor], dict] | None:
        """(id, state_dict, meta) of the current checkpoint; if it does not load, the newest that
        does (logged). None when there is no loadable checkpoint."""
        current = self.current_id()
        candidates = [m["id"] for m in reversed(self.list())]
        if current is not None:
            candidates = [current] + [c for c in candidates if c != current]
        for checkpoint_id in candidates:
            try:
                state_dict, meta = self.load(checkpoint_id)
            except CheckpointError as exc:
                log.warning("checkpoint %s skipped: %s", checkpoint_id, exc)
                continue
            if checkpoint_id != current:
                log.warning("using checkpoint %s instead of the current one (%s)", checkpoint_id, current)
            return checkpoint_id, state_dict, meta
        return None


def count_in_meta(meta: dict, key: str) -> int:
    """A whole number from checkpoint metadata; 0 when missing or unreadable (a damaged file)."""
    try:
        return max(0, int(meta.get(key) or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


def check_compatible(meta: dict, n_classes: int) -> None:
    """CheckpointError unless the checkpoint's model fits a project with ``n_classes`` classes."""
    arch = meta.get("arch")
    if not isinstance(arch, dict) or arch.get("name") != ARCH_NAME:
        raise CheckpointError(f"Checkpoint {meta.get('id')} holds an unknown model architecture {arch!r}.")
    if arch.get("in_channels") != 3:
        raise CheckpointError(f"Checkpoint {meta.get('id')} expects {arch.get('in_channels')} input channels, not 3.")
    prompts = arch.get("prompt_channels") or 0
    if prompts and prompts != 3 * n_classes:
        raise CheckpointError(f"Checkpoint {meta.get('id')} reads clicks for {prompts // 3} classes, not {n_classes}.")
    if arch.get("n_outputs") != n_classes + 1:
        raise CheckpointError(
            f"Checkpoint {meta.get('id')} was trained for {arch.get('n_outputs', 1) - 1} classes; "
            f"this project has {n_classes}. Train a new model for the new classes."
        )
    if meta.get("normalisation", NORMALISATION) != NORMALISATION:
        raise CheckpointError(
            f"Checkpoint {meta.get('id')} uses input normalisation {meta.get('normalisation')!r}; "
            f"this segdesk uses {NORMALISATION!r}."
        )
