"""Reads images and their labels off the GUI thread, so an image switch never waits for a decode.

Decoding a PNG, TIFF or DICOM takes 10-100s of ms (more for large images); on the GUI thread the
window would freeze at every switch. One reader thread decodes the image, checks its size against
the project, loads its label and renders the display pixels; the result comes back to the GUI
thread as a queued signal carrying the caller's request id, so the caller can drop an arrival the
user has moved on from. The image likely to come next can be read ahead; read-ahead copies are
kept only while their file is unchanged (size and modification time).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from segdesk.core import display, label_files
from segdesk.core.errors import SegdeskError
from segdesk.core.image import Image
from segdesk.core.labelling_session import ImageChanged, read_checked
from segdesk.core.project import Project
from segdesk.qt.canvas import LargeImageItem, is_large
from segdesk.qt.overlay import LabelOverlayItem

log = logging.getLogger(__name__)

# read-ahead copies kept at most (decoded pixels plus display pixels), counting the image being read:
# a 20,000 px image leaves no other in memory beside it (a 10,000 px RGB one kept was 0.3 GB of the
# 3 GB goal of ``segdesk bench large``)
CACHE_BYTES = 512 * 2**20
CACHE_ITEMS = 3


@dataclass
class LoadedImage:
    """An image read for display: pixels, default display window, display RGB and (unless the
    caller had the document already) its label for editing."""

    project: Project
    image_id: str
    image: Image
    window: tuple[float, float] | None
    rgb: np.ndarray
    label: np.ndarray | None  # None: not asked for
    label_warning: str | None  # the label did not fit and was set aside
    overlay: LabelOverlayItem | None = None  # ``label`` coloured, when a colour table was given
    level: tuple[int, np.ndarray | None] | None = None  # a large image's display fitted (canvas.LargeImageItem)


@dataclass
class _Read:
    stamp: tuple[int, int]  # the file's size and modification time when it was read
    image: Image
    window: tuple[float, float] | None
    rgb: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.image.pixels.nbytes + self.rgb.nbytes)


class ImageLoader(QObject):
    loaded = Signal(int, object)  # request id, LoadedImage
    failed = Signal(int, str, str, bool)  # request id, image id, message, the file changed size

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segdesk-image-read")
        self._latest = 0  # the newest request id; older loads not started yet are skipped
        self._lock = threading.Lock()  # guards _cache (the reader writes it, shutdown clears it)
        self._cache: OrderedDict[tuple[str, str], _Read] = OrderedDict()
        self._closed = False

    def load(self, request_id: int, project: Project, image_id: str, with_label: bool,
             lut: np.ndarray | None = None, step: int = 0) -> None:
        """Read ``image_id`` (and its label when ``with_label``, coloured for display with ``lut``
        when given: colouring a large label takes a frame or more); the answer is ``loaded`` or
        ``failed`` with ``request_id``. A newer load makes this one skipped if it has not begun.
        ``step``: the sampling step the canvas will fit a large image at; its display and label are
        drawn at it here (20-50 ms at 10,000 px that the GUI thread's first paint would take)."""
        if self._closed:
            return
        self._latest = request_id
        entry = project.image(image_id)  # resolved here: the project is the GUI thread's
        path, frame = project.source_path(entry), entry.frame
        self._pool.submit(self._load, request_id, project, image_id, Path(path), frame, entry.shape, with_label, lut,
                          step)

    def read_ahead(self, project: Project, image_id: str) -> None:
        """Decode ``image_id`` in the background so that showing it later is quick; skipped when a
        load is asked for before it begins."""
        if self._closed:
            return
        entry = project.image(image_id)
        self._pool.submit(self._read_ahead, self._latest, project, image_id, Path(project.source_path(entry)),
                          entry.frame, entry.shape)

    def forget(self) -> None:
        """Drop the read-ahead copies (another project was opened: its images are not the next ones)."""
        with self._lock:
            self._cache.clear()

    def shutdown(self) -> None:
        """Stop: queued reads are dropped; a read already running ends on its own and says nothing."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._cache.clear()

    # ----- the reader thread

    def _load(self, request_id: int, project: Project, image_id: str, path: Path, frame, shape,
              with_label: bool, lut: np.ndarray | None, step: int = 0) -> None:
        if request_id < self._latest or self._closed:
            return  # the user moved on before it began
        try:
            read = self._read(project, image_id, path, frame, shape)
            label, warning = label_files.load_for_editing(project, image_id) if with_label else (None, None)
            overlay = None
            if label is not None and lut is not None:
                label = np.ascontiguousarray(label, np.uint8)  # the array a LabelDocument edits in place
                overlay = LabelOverlayItem(label, lut)  # in no scene until the GUI thread adds it
            level = None
            if step > 0 and is_large(read.rgb):
                level = (step, LargeImageItem.level_of(read.rgb, step))
                if overlay is not None:
                    overlay.prime(step)
            self._emit(self.loaded, request_id,
                       LoadedImage(project, image_id, read.image, read.window, read.rgb, label, warning, overlay, level))
        except ImageChanged as exc:
            self._emit(self.failed, request_id, image_id, str(exc), True)
        except SegdeskError as exc:
            self._emit(self.failed, request_id, image_id, str(exc), False)
        except Exception as exc:  # noqa: BLE001 - never lose an error in the thread; the window shows it
            log.exception("reading %s failed", path)
            self._emit(self.failed, request_id, image_id, f"Could not read {path.name}: {exc}", False)

    def _read_ahead(self, asked_at: int, project: Project, image_id: str, path: Path, frame, shape) -> None:
        if asked_at < self._latest or self._closed:
            return
        try:
            self._read(project, image_id, path, frame, shape)
        except Exception as exc:  # noqa: BLE001 - reported when the image is really opened
            log.debug("read-ahead of %s failed: %s", path, exc)

    def _read(self, project: Project, image_id: str, path: Path, frame, shape) -> _Read:
        """The decoded image, from the read-ahead copy while its file is unchanged."""
        key = (str(project.root), image_id)
        stamp = _stamp(path)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and stamp is not None and hit.stamp == stamp and hit.image.shape2d == tuple(shape):
            return hit
        with self._lock:  # room first (a byte a pixel at least): the decode must not peak beside old copies
            self._evict(key, int(shape[0]) * int(shape[1]) if shape else 0)
        image = read_checked(path, frame, shape)
        window = display.default_window(image)
        read = _Read(stamp or (-1, -1), image, window, display.render(image, window))
        with self._lock:
            self._evict(key, read.nbytes)
            if stamp is not None and read.nbytes <= CACHE_BYTES:
                self._cache[key] = read
                while len(self._cache) > CACHE_ITEMS:
                    self._cache.popitem(last=False)
        return read

    def _evict(self, key: tuple[str, str], nbytes: int) -> None:
        """Drop ``key`` and the oldest copies until ``nbytes`` more fit within CACHE_BYTES (lock held)."""
        self._cache.pop(key, None)
        while self._cache and sum(r.nbytes for r in self._cache.values()) + nbytes > CACHE_BYTES:
            self._cache.popitem(last=False)

    def _emit(self, signal, *args) -> None:
        if self._closed:
            return
        try:
            signal.emit(*args)
        except RuntimeError:  # the window (and this object) went away while the read ran
            log.debug("image read finished after the window closed")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
