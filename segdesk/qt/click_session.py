"""The Click tool's session: the clicks on the open image, their markers, and the model's answers.

A left click says "this is the selected class", a right click or Shift+click "this is not". Each
click sends every click so far and the mask shown now (label over proposal, as accept would store
it) to the inference worker (qt/inference_worker.py ``refine``); a newer click supersedes a pending
one. The answer (the window the model recomputed) changes the label inside that window as one
undo step, so Ctrl+Z undoes a click's change and brush corrections go on top. Only the pixels whose
shown class the answer changes become label: the rest of the window keeps showing the proposal
(or the user's own label), so a click does not turn a whole window into unchecked label, and the
corrections stand out as corrections do. Backspace removes the
last click: its change is undone, or, when edits came after it, the pixels it changed and nothing
changed since get back the values they had before it; the clicks still pending are asked again.

The clicks and markers belong to one image: they go when the image changes, the project changes or
the image is accepted. A checkpoint that does not read clicks (``prompts`` in its metadata) makes
the tool say so and do nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from segdesk.core import encoding
from segdesk.core.clicks import Click
from segdesk.core.history import PaintAtom
from segdesk.core.label_document import LabelDocument
from segdesk.qt.canvas import Canvas
from segdesk.qt.click_markers import ClickMarkers
from segdesk.qt.inference_worker import NO_CLICKS
from segdesk.qt.tool_controller import Tool, ToolController

log = logging.getLogger(__name__)


@dataclass
class _Placed:
    click: Click
    answered: bool = False  # its answer (or a later click's, which carried it) is in the label
    own: bool = False  # answered by a request it was the last click of (not only by a later click's)
    step: PaintAtom | None = None  # the undo step its answer made (None: nothing changed)
    version: int = -1  # the document's version right after that step


@dataclass
class _Pending:
    request_id: int
    image_id: str
    doc: LabelDocument
    version: int  # the document's version the request was made from
    proposal: np.ndarray | None  # the proposal shown then
    started: float  # time.perf_counter() at the click


class ClickSession(QObject):
    message = Signal(str, int)  # for the status bar, shown for that many milliseconds
    answered = Signal(str)  # image id: a click's answer is in its label (and on screen)
    # request id, image id, pixels, clicks, label (a copy), proposal: to the inference worker's thread
    _refine = Signal(int, str, object, object, object, object)

    def __init__(self, canvas: Canvas, controller: ToolController, session, parent=None):
        """``session``: the SessionController, whose ``current`` is the open image."""
        super().__init__(parent)
        self._controller, self._session = controller, session
        self._loop = None
        self._worker = None
        self._clicks: list[_Placed] = []
        self._pending: _Pending | None = None
        self._next_id = 0
        self.markers = ClickMarkers()
        canvas.scene().addItem(self.markers)
        controller.click_placed.connect(self.click)
        controller.document_changed.connect(self.clear)
        controller.undoing.connect(self._before_undo)
        controller.tool_changed.connect(self._on_tool)

    def bind(self, loop) -> None:
        """A project opened with ``loop`` (a LoopController): clicks go to its inference worker."""
        self.clear()
        if self._worker is not None:
            try:
                self._refine.disconnect(self._worker.refine)
            except (RuntimeError, TypeError):  # the previous project's worker is gone already
                pass
        self._loop = loop
        # the loop's worker (the loop offers no public handle on it): its refine slot runs on its thread
        self._worker = loop.inference
        self._refine.connect(self._worker.refine)
        self._worker.refined.connect(self._on_refined)
        self._worker.refine_failed.connect(self._on_failed)

    @property
    def clicks(self) -> list[Click]:
        return [p.click for p in self._clicks]

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def clear(self) -> None:
        """Forget the clicks and their markers (the label keeps their changes); drop a pending answer."""
        self._clicks = []
        self.markers.clear()
        self._cancel_pending()

    def _cancel_pending(self) -> None:
        if self._pending is not None:
            self._pending = None
            self._next_id += 1  # the worker drops the pending request unrun if it has not begun
            if self._worker is not None:
                self._worker.supersede_click(self._next_id)

    # ----- clicks

    def why_no_clicks(self) -> str:
        """Why clicks cannot be answered now ("" when they can): no model, or one that does not read
        them. A checkpoint not listed yet is given the benefit of the doubt (the worker checks)."""
        loop = self._loop
        if loop is None or loop.active_checkpoint is None:
            need = f": {loop.start_hint}" if loop is not None else ""
            return f"No trained model yet{need}. Clicks need one."
        meta = next((m for m in loop.checkpoints if m.get("id") == loop.active_checkpoint), None)
        if meta is not None and meta.get("prompts") != "clicks":
            return NO_CLICKS
        return ""

    @Slot(str)
    def _on_tool(self, name: str) -> None:
        """Choosing the Click tool says at once when clicks cannot be answered now."""
        if name == Tool.CLICK.value and self._session.current is not None and (reason := self.why_no_clicks()):
            self.message.emit(reason, 10000)

    @Slot(float, float, bool)
    def click(self, x: float, y: float, positive: bool) -> None:
        """A click at image pixel (x, y); outside the image it is ignored."""
        cur = self._session.current
        if cur is None:
            return
        h, w = cur.doc.shape
        iy, ix = int(round(y)), int(round(x))
        if not (0 <= iy < h and 0 <= ix < w):
            return
        reason = self.why_no_clicks()
        if reason:
            self.message.emit(reason, 10000)
            return
        number = int(encoding.label_to_mask(np.array(self._controller.value, np.uint8)))
        if number == 0:
            self.message.emit("Choose a class in the Classes list to click for (not background).", 10000)
            return
        self._clicks.append(_Placed(Click(iy, ix, number, positive)))
        self.markers.add(iy, ix, positive)
        self._send()

    def _send(self) -> None:
        """Ask the worker for the answer to every click so far, from the mask shown now."""
        cur = self._session.current
        if cur is None or self._worker is None or not self._clicks:
            return
        self._next_id += 1
        self._pending = _Pending(self._next_id, cur.image_id, cur.doc, cur.doc.version, cur.proposal,
                                 time.perf_counter())
        self._worker.supersede_click(self._next_id, asked=True)
        # the label is copied (it changes under the user's brush); the proposal array is never changed
        self._refine.emit(self._next_id, cur.image_id, cur.image.pixels, self.clicks, cur.doc.label.copy(),
                          cur.proposal)

    @Slot(int, str, object, object, str)
    def _on_refined(self, request_id: int, image_id: str, values: np.ndarray, box, checkpoint: str) -> None:
        pending = self._pending
        if pending is None or request_id != pending.request_id:
            return  # stale: a newer click, Backspace or another image came since
        cur = self._session.current
        if cur is None or cur.image_id != image_id or cur.doc is not pending.doc:
            self._pending = None
            return
        if cur.doc.version != pending.version:  # the label was edited while the model ran: ask again
            self._send()
            return
        self._pending = None
        if cur.proposal is not pending.proposal:  # another proposal came meanwhile: the answer read the old one
            self._send()
            return
        step = cur.doc.replace(box, values)
        for placed in self._clicks:
            placed.answered = True
        last = self._clicks[-1]
        last.own, last.step, last.version = True, step, cur.doc.version
        if step is not None:
            self._controller.changed(step.box)
        ms = 1000 * (time.perf_counter() - pending.started)
        self.message.emit(f"click answered in {ms:.0f} ms (model {checkpoint})", 5000)
        self.answered.emit(image_id)

    @Slot(int, str, str)
    def _on_failed(self, request_id: int, image_id: str, message: str) -> None:
        if self._pending is None or request_id != self._pending.request_id:
            return
        self._pending = None
        while self._clicks and not self._clicks[-1].answered:  # their markers would promise a change
            self._clicks.pop()
            self.markers.pop()
        if message:
            self.message.emit(message, 10000)

    # ----- removing clicks

    def remove_last(self) -> None:
        """Backspace: the last click goes, and the label gets back what it was before that click."""
        if not self._clicks:
            self.message.emit("No click to remove.", 3000)
            return
        placed = self._clicks.pop()
        self.markers.pop()
        self._cancel_pending()
        cur = self._session.current
        if cur is not None and placed.step is not None:
            if cur.doc.version == placed.version:  # its change is the last step: undo it
                self._controller.changed(cur.doc.undo())
            else:  # edits came after it: its pixels get back what they had before it, as a new step
                self._controller.changed(self._revert(cur.doc, placed.step))
        if self._clicks and not self._clicks[-1].own:  # their answer came only with this click's: ask again
            for placed in reversed(self._clicks):
                if placed.own:
                    break
                placed.answered = False
            self._send()
        self.message.emit(f"Click removed; {len(self._clicks)} left.", 3000)

    @staticmethod
    def _revert(doc: LabelDocument, step: PaintAtom):
        """The pixels ``step`` changed and nothing changed since get their values from before it, as
        one undo step; later edits stay. Returns the box changed, or None."""
        y0, x0, y1, x1 = step.box
        values = doc.label[y0:y1, x0:x1].copy()
        now = values[step.mask]
        untouched = now == step.new
        now[untouched] = step.old[untouched]
        values[step.mask] = now
        reverted = doc.replace(step.box, values)
        return reverted.box if reverted is not None else None

    @Slot()
    def _before_undo(self) -> None:
        """Ctrl+Z on the last click's change: the click goes with it (its marker too), so the next
        click does not send it again."""
        cur = self._session.current
        if self._clicks and cur is not None:
            last = self._clicks[-1]
            if last.step is not None and cur.doc.version == last.version:
                self._clicks.pop()
                self.markers.pop()
                self._cancel_pending()
