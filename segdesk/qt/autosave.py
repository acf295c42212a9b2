"""Writes label PNGs off the GUI thread, so a stroke on a large image never waits for the disk.

One writer thread, in order. The GUI submits a copy of the label with its document version and
gets ``saved`` or ``failed`` back (queued to the GUI thread); ``flush`` waits for everything
submitted, for image switches, accept and close.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from segdesk.core import encoding, storage
from segdesk.core.errors import SegdeskError

log = logging.getLogger(__name__)


class Autosaver(QObject):
    saved = Signal(str, int, bool, bool)  # image id, version, painted anything, has unlabelled pixels
    failed = Signal(str, int, str)  # image id, version, message

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segdesk-autosave")
        self._pending: list[Future] = []
        self._saved_versions: dict[str, int] = {}  # written by the worker, read after flush()

    def mark_saved(self, image_id: str, version: int) -> None:
        """Record that ``version`` of an image's label is on disk (it was just loaded or written)."""
        self._saved_versions[image_id] = version

    def saved_version(self, image_id: str) -> int | None:
        return self._saved_versions.get(image_id)

    def submit(self, image_id: str, path: Path, label: np.ndarray, version: int) -> None:
        """Queue a write of ``label`` (the caller's copy; it must not change afterwards)."""
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(self._write, image_id, path, label, version))

    def _write(self, image_id: str, path: Path, label: np.ndarray, version: int) -> None:
        try:
            storage.write_label(path, label)
        except SegdeskError as exc:
            log.warning("autosave of %s failed: %s", image_id, exc)
            self.failed.emit(image_id, version, str(exc))
            return
        except Exception as exc:  # never lose the error in the thread (DESIGN.md style 4)
            log.exception("autosave of %s failed", image_id)
            self.failed.emit(image_id, version, f"Could not save the label: {exc}")
            return
        self._saved_versions[image_id] = version
        self.saved.emit(image_id, version, bool(label.any()), bool((label == encoding.UNLABELLED).any()))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every submitted write has finished (its signal is queued, not yet delivered)."""
        for f in self._pending:
            try:
                f.result(timeout=timeout)
            except Exception:  # reported through ``failed`` already
                pass
        self._pending = []

    def shutdown(self) -> None:
        self.flush()
        self._pool.shutdown(wait=True)
