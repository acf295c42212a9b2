"""Colours a proposal's overlay off the GUI thread.

Building a LabelOverlayItem colours every pixel (and, for a proposal, finds the region edges):
35 ms for a 1024 x 1024 proposal on an idle core here, and 100-500 ms when the GUI thread shares
the CPU with training and another program (the longest stalls ``segdesk bench ui`` found). The
item is built on a thread of its own (NumPy releases the GIL for the work) and handed to the GUI
thread, which adds it to the scene; it is in no scene until then, so no other thread touches it.
Only the newest request counts: an older one not started yet is skipped.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PySide6.QtCore import QObject, Signal

from segdesk.qt.overlay import LabelOverlayItem

log = logging.getLogger(__name__)


class OverlayBuilder(QObject):
    built = Signal(int, object)  # ticket, LabelOverlayItem

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segdesk-overlay")
        self._latest = 0
        self._closed = False

    def build(self, label: np.ndarray, lut: np.ndarray, edge_lut: np.ndarray | None = None, dash: int = 0) -> int:
        """Build an overlay of ``label`` (which must not change afterwards); returns the ticket
        ``built`` will carry."""
        self._latest += 1
        if not self._closed:
            self._pool.submit(self._build, self._latest, label, lut, edge_lut, dash)
        return self._latest

    def cancel(self) -> None:
        """Nothing asked so far is wanted any more."""
        self._latest += 1

    def shutdown(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _build(self, ticket: int, label, lut, edge_lut, dash) -> None:
        if ticket != self._latest or self._closed:
            return  # a newer one was asked for before this began
        try:
            item = LabelOverlayItem(label, lut, edge_lut=edge_lut, dash=dash)
        except Exception:  # noqa: BLE001 - never lose an error in the thread
            log.exception("colouring a proposal failed")
            return
        if not self._closed:
            try:
                self.built.emit(ticket, item)
            except RuntimeError:  # the window (and this object) went away meanwhile
                pass
