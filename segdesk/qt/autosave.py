"""Writes label PNGs off the GUI thread, so a stroke on a large image never waits for the disk.

One writer thread, in order. The GUI submits a copy of the label with its document version and
gets ``saved`` or ``failed`` back (queued to the GUI thread). ``flush`` waits for everything
submitted, at accept, save and close, where the user must not lose work; an image switch only
``settle``s, waiting a frame at most, so a slow disk never freezes the window between images.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from segdesk.core import encoding, storage
from segdesk.core.errors import SegdeskError

log = logging.getLogger(__name__)

FRAME_S = 1 / 60  # the longest an image switch waits for the writer
CLOSE_S = 30.0  # the longest accept, save and close wait for it


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

    def flush(self, timeout: float = CLOSE_S) -> bool:
        """Wait until every submitted write has finished (its signal is queued, not yet delivered);
        False, with a warning logged, when some still run after ``timeout`` seconds."""
        if self._wait(timeout):
            return True
        log.warning("%d label write(s) still running after %.0f s", len(self._pending), timeout)
        return False

    def settle(self, timeout: float = FRAME_S) -> bool:
        """Wait a frame at most; True when every submitted write has finished. The others go on:
        they report through ``saved`` or ``failed``, and a later flush waits for them."""
        if self._wait(timeout):
            return True
        log.debug("%d label write(s) go on in the background", len(self._pending))
        return False

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        try:
            for f in self._pending:  # a write's own errors are reported through ``failed``, never raised
                f.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            pass
        self._pending = [f for f in self._pending if not f.done()]
        return not self._pending

    def shutdown(self) -> None:
        self.flush()
        self._pool.shutdown(wait=True)
