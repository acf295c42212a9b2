"""The stored proposal scores for "least sure first", read off the GUI thread.

The inference worker stores each proposal's uncertainty in proposals/<id>.json (segdesk.core
.next_image). Reading them is one ``stat`` per image not accepted, and a read of each changed file:
on a shared folder that is slow, or gone, far longer than a frame. A reader thread reads them
(``refresh``); the window chooses the next image and shows the scores from the last reading
(``of``, the interface of next_image.Scores), and scores the inference worker reports as it
scouts (``put``) count at once.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from segdesk.core.next_image import Scores

log = logging.getLogger(__name__)


class ScoreReader(QObject):
    changed = Signal()  # a reading arrived (or a score was put): ``of`` may answer differently

    # from the thread: proposals folder, the image ids read, {image id: (checkpoint, uncertainty)}
    _read = Signal(object, object, object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segdesk-score-read")
        self._folder: Path | None = None
        self._known: dict[str, tuple[str | None, float]] = {}
        self._reading = False
        self._again: list[str] | None = None  # asked for while a reading was on its way
        self._closed = False
        # the reader thread's: a file is read again only when its inode, time or size changed
        self._stored: tuple[Path, Scores] | None = None
        self._read.connect(self._arrived)

    def set_folder(self, proposals_dir: Path) -> None:
        """Another project: its scores from now on (none known until the first reading)."""
        self._folder = Path(proposals_dir)
        self._known = {}

    def refresh(self, image_ids: list[str]) -> None:
        """Read the stored scores of ``image_ids`` on the reader thread; ``changed`` when read."""
        if self._closed or self._folder is None:
            return
        if self._reading:
            self._again = list(image_ids)  # one reading at a time: a slow share does not pile them up
            return
        self._reading = True
        self._pool.submit(self._read_all, self._folder, list(image_ids))

    def put(self, image_id: str, checkpoint: str, uncertainty: float) -> None:
        """A score the inference worker just stored (its ``scored`` signal)."""
        self._known[image_id] = (checkpoint, float(uncertainty))
        self.changed.emit()

    def of(self, image_ids: list[str], checkpoint: str | None) -> dict[str, float]:
        """The known uncertainty of each image's stored proposal made by ``checkpoint``; images
        without one are left out (and every image when ``checkpoint`` is None)."""
        if checkpoint is None:
            return {}
        out = {}
        for image_id in image_ids:
            hit = self._known.get(image_id)
            if hit is not None and hit[0] == checkpoint:
                out[image_id] = hit[1]
        return out

    def shutdown(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ----- the reader thread

    def _read_all(self, folder: Path, image_ids: list[str]) -> None:
        known = {}
        try:
            for image_id in image_ids:
                if self._closed:
                    return
                hit = self._score(folder, image_id)
                if hit is not None:
                    known[image_id] = hit
        except Exception:  # noqa: BLE001 - never lose an error in the thread; the next reading tries again
            log.exception("reading the stored proposal scores failed")
        if not self._closed:
            try:
                self._read.emit(folder, image_ids, known)
            except RuntimeError:  # the window (and this object) went away while it read
                pass

    def _score(self, folder: Path, image_id: str) -> tuple[str | None, float] | None:
        if self._stored is None or self._stored[0] != folder:
            self._stored = (folder, Scores(folder))
        meta = self._stored[1].meta(image_id)
        u = meta.get("uncertainty") if meta else None
        return None if u is None else (meta.get("checkpoint"), float(u))

    # ----- back on the GUI thread

    def _arrived(self, folder: Path, image_ids: list[str], known: dict) -> None:
        self._reading = False
        if folder == self._folder:
            for image_id in image_ids:
                if image_id in known:
                    self._known[image_id] = known[image_id]
                else:
                    self._known.pop(image_id, None)
            self.changed.emit()
        if self._again is not None:
            again, self._again = self._again, None
            self.refresh(again)
