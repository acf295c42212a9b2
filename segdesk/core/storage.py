"""Atomic file writes and label PNG encoding.

Every write goes to a temporary file in the target folder, is flushed and fsynced, then
``os.replace``d over the target, so a crash at any moment leaves the last good version.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
from pathlib import Path

import cv2
import numpy as np

from segdesk.core import decode_limits, encoding
from segdesk.core.errors import LabelError, StorageError

log = logging.getLogger(__name__)

TMP_PREFIX = ".segdesk-tmp-"

def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform (Windows); the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_call(fd: int, data: bytes) -> None:
    """The single place bytes reach the disk (tests patch it to simulate a full disk)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; raise StorageError saying what failed."""
    path = Path(path)
    folder = path.parent
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=path.suffix, dir=folder)
        try:
            _write_call(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StorageError(f"Could not save {path.name} in {folder}: {reason}.") from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to an append-only log, fsynced. A torn last line is tolerated by readers:
    it is ended before the next line, so one torn line never spoils the line after it."""
    path = Path(path)
    try:
        with open(path, "a+b") as f:
            end = f.seek(0, os.SEEK_END)
            torn = end > 0 and f.seek(end - 1) >= 0 and f.read(1) != b"\n"
            f.write((("\n" if torn else "") + line.rstrip("\n") + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise StorageError(f"Could not append to {path.name}: {exc.strerror or exc}.") from exc


def clean_temporaries(folder: str | os.PathLike, skip: tuple[str, ...] = ()) -> int:
    """Remove temporaries left by a crash below ``folder``, except in its subfolders named in
    ``skip``; return how many were removed."""
    removed = 0
    folder = Path(folder)
    for tmp in folder.rglob(TMP_PREFIX + "*"):
        if tmp.relative_to(folder).parts[0] in skip:
            continue
        try:
            tmp.unlink()
            removed += 1
        except OSError as exc:
            log.warning("could not remove temporary %s: %s", tmp, exc)
    if removed:
        log.info("removed %d temporary files left by an earlier crash", removed)
    return removed


def encode_png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise StorageError("Could not encode PNG.")
    return buf.tobytes()


def write_label(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write a label map (uint8, H x W, DESIGN.md encoding) as PNG, atomically."""
    if label.dtype != np.uint8 or label.ndim != 2:
        raise LabelError(f"A label must be a 2D uint8 array, not {label.dtype} {label.shape}.")
    atomic_write_bytes(path, encode_png(label))


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_hw(head: bytes) -> tuple[int, int]:
    w, h = struct.unpack(">II", head[16:24])
    return h, w


def read_label(path: str | os.PathLike, shape: tuple[int, int], n_classes: int) -> np.ndarray:
    """Read a label PNG and check it against its image's ``shape`` and the class count."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise LabelError(f"Could not read label {path.name}: {exc.strerror or exc}.") from exc
    head = data[:24].tobytes()
    if head[:8] != _PNG_MAGIC or len(head) < 24 or decode_limits.png_problem(data.tobytes(), *_png_hw(head)):
        label = None  # checked before OpenCV allocates what a damaged header promises
    elif _png_hw(head) != tuple(shape):
        h, w = _png_hw(head)
        raise LabelError(
            f"Label {path.name} is {w}x{h} but its image is {shape[1]}x{shape[0]}; it was kept on disk "
            "and not loaded."
        )
    else:
        label = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise LabelError(f"Label {path.name} is not a readable PNG (corrupt or truncated).")
    if label.ndim != 2 or label.dtype != np.uint8:
        raise LabelError(f"Label {path.name} must be single-channel 8-bit, not {label.dtype} {label.shape}.")
    if label.shape != tuple(shape):
        raise LabelError(
            f"Label {path.name} is {label.shape[1]}x{label.shape[0]} but its image is "
            f"{shape[1]}x{shape[0]}; it was kept on disk and not loaded."
        )
    top = int(label.max()) if label.size else 0
    if top > encoding.max_label_value(n_classes):
        raise LabelError(f"Label {path.name} holds value {top} but the project has {n_classes} classes.")
    return label
