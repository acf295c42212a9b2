"""Puts the labelling session (segdesk.core.labelling_session) on screen.

The canvas, the tool controller, the saver, the display window and the image list follow the open
image; proposals are asked of the loop and its answers shown under the label. Notes and errors go
out as signals for the window to show.

An image switch asks the image loader (another thread) for the pixels and the label; the image
on screen stays, and editable, until they arrive, and an arrival the user has moved on from (a
newer switch) is dropped. The image likely to come next is read ahead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QAction

from segdesk.core import display, next_image
from segdesk.core.label_document import LabelDocument
from segdesk.core.labelling_session import AcceptRequest, LabellingSession, OpenImage
from segdesk.core.project import Project
from segdesk.qt.canvas import Canvas
from segdesk.qt.image_loader import ImageLoader, LoadedImage
from segdesk.qt.image_list import ImageList
from segdesk.qt.loop_controller import LoopController
from segdesk.qt.overlay_builder import OverlayBuilder
from segdesk.qt.overlay import LEARNING_DASH, LabelOverlayItem, colour_table, learning_proposal_tables, proposal_tables
from segdesk.qt.save_keeper import SaveKeeper
from segdesk.qt.score_reader import ScoreReader
from segdesk.qt.status_bar import StatusFields
from segdesk.qt.tool_controller import ToolController
from segdesk.qt.tools_panel import ToolsPanel
from segdesk.qt.windowing import WindowingController

NO_PROPOSAL = "No proposal: "  # the status message's start when a proposal is withheld or fails


class SessionController(QObject):
    message = Signal(str, int)  # for the status bar, shown for that many milliseconds
    error = Signal(str, str)  # title, message: shown in a dialog
    image_shown = Signal(str)  # image id: it is on screen, with its label
    image_failed = Signal(str)  # image id: it could not be opened (the error was shown)
    image_accepted = Signal(str)  # image id: its accept is on disk (label file and project.json)
    proposal_shown = Signal(str)  # image id: its proposal is on the canvas

    def __init__(self, canvas: Canvas, controller: ToolController, saver: SaveKeeper, image_list: ImageList,
                 windowing: WindowingController, tools: ToolsPanel, status: StatusFields,
                 actions: dict[str, QAction], parent=None):
        super().__init__(parent)
        self._canvas, self._controller, self._saver = canvas, controller, saver
        self._image_list, self._windowing, self._tools = image_list, windowing, tools
        self._status, self._actions = status, actions
        self.session: LabellingSession | None = None
        self._loop: LoopController | None = None
        # the request for the open image's proposal not answered yet (0: none): the next image is
        # prefetched only once it is answered, since a newer prefetch would supersede it unrun
        self._awaiting = 0
        self._loader = ImageLoader(self)
        self._loader.loaded.connect(self._on_loaded)
        self._loader.failed.connect(self._on_load_failed)
        self._next_request = 0
        # the switch on its way: (request id, image id, the unsaved document the saver handed over)
        self._wanted: tuple[int, str, LabelDocument | None] | None = None
        # accepts on their way to the disk: image id -> what was asked to be stored
        self._requests: dict[str, AcceptRequest] = {}
        self._moved_to: dict[str, str | None] = {}  # where each accept went on to
        saver.accepted.connect(self._on_accepted)
        saver.accept_failed.connect(self._on_accept_failed)
        image_list.order_chosen.connect(self.set_order)
        # with "least sure first", the list shows the scores the inference worker stores as it
        # scouts, read off this thread (a slow shared folder never stalls the window)
        self._overlays = OverlayBuilder(self)  # proposals are coloured off this thread
        self._overlays.built.connect(self._on_overlay_built)
        self._proposal_ticket = 0
        self._scores = ScoreReader(self)
        self._scores.changed.connect(self._show_scores)
        self._scores_timer = QTimer(self, interval=2000)
        self._scores_timer.timeout.connect(self._refresh_scores)

    @property
    def current(self) -> OpenImage | None:
        return self.session.current if self.session is not None else None

    @property
    def switching_to(self) -> str | None:
        """The image asked for and not on screen yet (being read), or None."""
        return self._wanted[1] if self._wanted is not None else None

    def start(self, project: Project, loop: LoopController) -> None:
        """A project was opened (the previous image left): label it with proposals from ``loop``."""
        self._scores.set_folder(project.root / "proposals")
        self._loader.forget()
        self.session, self._loop = LabellingSession(project, scores=self._scores), loop
        self._requests, self._moved_to = {}, {}
        rgbs = [c.rgb for c in project.classes]
        self._lut = colour_table(rgbs)
        self._proposal_luts = proposal_tables(rgbs)
        self._learning_luts = learning_proposal_tables(rgbs)
        loop.proposal_ready.connect(self._on_proposal)
        loop.proposal_failed.connect(self._on_proposal_failed)
        loop.checkpoint_changed.connect(lambda _c: self._on_model_changed())
        loop.scored.connect(self._scores.put)
        self._order_changed(next_image.order_of(project))
        first = self.session.first()
        if first is not None:
            self.show(first)
        else:
            self.message.emit("Add images to the project: File > Add images (Ctrl+I).", 0)

    # ----- images

    def show(self, image_id: str) -> bool:
        """Switch to an image: it is read on the loader's thread and shown when it arrives
        (``image_shown``, or an error and ``image_failed``); the current one stays on screen until
        then, and is saved when it goes. False when no project is open."""
        session = self.session
        if session is None:
            return False
        self._drop_wanted()
        if session.current is not None and session.current.image_id == image_id:
            return True
        self._next_request += 1
        # an unsaved document (its write failed or still runs) is taken now: the file on disk may be older
        doc = self._saver.take_unsaved(image_id)
        self._wanted = (self._next_request, image_id, doc)
        self._loader.load(self._next_request, session.project, image_id, with_label=doc is None, lut=self._lut,
                          step=self._canvas.fit_step(session.project.image(image_id).shape))
        return True

    def _drop_wanted(self) -> None:
        """Forget the switch on its way (its arrival will be dropped); an unsaved document it took
        goes back to the saver."""
        if self._wanted is not None:
            _, image_id, doc = self._wanted
            self._wanted = None
            if doc is not None:
                self._saver.keep_unsaved(image_id, doc)

    def _on_load_failed(self, request_id: int, image_id: str, message: str, changed: bool) -> None:
        if self._wanted is None or self._wanted[0] != request_id or self.session is None:
            return
        self._drop_wanted()
        self._image_list.set_status(self.session.project.image(image_id), error=message)
        if self.current is not None:
            self._image_list.select(self.current.image_id)  # the list shows what the canvas shows
        self.error.emit("Image changed" if changed else "Cannot open image", message)
        self.image_failed.emit(image_id)

    def _on_loaded(self, request_id: int, loaded: LoadedImage) -> None:
        session = self.session
        if self._wanted is None or self._wanted[0] != request_id or session is None \
                or loaded.project is not session.project:
            if loaded.label_warning:  # set aside while the user moved on: still say so
                self.message.emit(loaded.label_warning.replace("\n", " "), 15000)
            return
        _, image_id, doc = self._wanted
        self._wanted = None
        self.leave()
        on_disk = doc is None
        if doc is None:
            if loaded.label_warning:
                self.error.emit("Label not loaded", loaded.label_warning)
            doc = LabelDocument(loaded.label)
        self._saver.opened(image_id, doc, on_disk)
        cur = session.open(image_id, loaded.image, doc, loaded.window)
        self._canvas.set_image(loaded.rgb, loaded.level)
        overlay = loaded.overlay  # coloured on the loader's thread, for the array the document edits
        if overlay is None or loaded.label is not doc.label:
            overlay = LabelOverlayItem(doc.label, self._lut)
        overlay.setOpacity(self._tools.opacity_slider.value() / 100.0)
        if self._actions["outline"].isChecked():  # each set_outline colours the whole label again
            overlay.set_outline(True)
        overlay.setVisible(self._actions["toggle_labels"].isChecked())
        self._canvas.set_overlay(overlay)
        self._controller.set_document(doc)
        self._windowing.set_image(loaded.image, cur.window)
        self._image_list.select(image_id)
        self._canvas.fit()
        self._status.proposal.setText("")
        self._awaiting = 0
        if session.needs_proposal() and self._loop is not None:
            if self._actions["auto_propose"].isChecked():
                self._awaiting = session.asked(self._loop.segment(image_id, prefetch=self._loop.cached(image_id) is None,
                                                                  pixels=cur.image.pixels))
            self._prefetch_next()  # at once when nothing was asked, else when the answer is in
        following = session.following(self._loop.active_checkpoint if self._loop is not None else None)
        if following is not None:
            self._loader.read_ahead(session.project, following)
        self.image_shown.emit(image_id)

    def leave(self) -> None:
        """Hand the current image's label to the writer (waiting a frame at most; the save keeper
        holds it until the disk confirms) before switching away or closing. A switch on its way is
        called off."""
        self._drop_wanted()
        if self.current is None:
            return
        self._controller.finish_stroke()
        self._controller.cancel_polygon()
        self._saver.close()
        self.session.leave()
        self._controller.set_document(None)
        self._clear_proposal()
        self._canvas.set_overlay(None)
        self._canvas.set_image(None)
        self._windowing.set_image(None, None)  # nothing keeps the pixels while the next image is read

    def step(self, step: int) -> None:
        """Previous / next image in the list; with "least sure first", Next image goes to the image
        not accepted that the model is least sure of (in the list's order once all are accepted)."""
        if self.session is None:
            return
        image_id, after = None, self.switching_to  # quick presses go on from the image on its way
        if step > 0 and next_image.order_of(self.session.project) == next_image.UNCERTAIN:
            image_id = self.session.following(self._loop.active_checkpoint if self._loop is not None else None, after)
        if image_id is None:
            image_id = self.session.step(step, after)
        if image_id is not None:
            self.show(image_id)

    # ----- proposals and accept

    def segment(self, anyway: bool = False) -> None:
        """The one button: show the model's proposal for the current image. ``anyway``: also when
        the model is still learning (its proposals cost more to correct than drawing)."""
        if self.current is not None and self._loop is not None:
            if self.session.asked(self._loop.segment(self.current.image_id, anyway=anyway,
                                                     pixels=self.current.image.pixels)):
                self._status.proposal.setText("segmenting…")

    def _on_model_changed(self) -> None:
        """A model proposes now: the image on screen gets a proposal if it has none (it opened
        before any model was loaded, e.g. the first image of a project), then the next one."""
        cur = self.current
        if (cur is not None and cur.proposal is None and not self._awaiting and self.session.needs_proposal()
                and self._actions["auto_propose"].isChecked()):
            self._awaiting = self.session.asked(
                self._loop.segment(cur.image_id, prefetch=self._loop.cached(cur.image_id) is None,
                                   pixels=cur.image.pixels))
        self._prefetch_next()

    def _prefetch_next(self) -> None:
        """Ask in advance for the proposal of the image that comes next (segdesk.core.next_image),
        unless the open image's own proposal is still on its way."""
        if self.session is not None and self._loop is not None and not self._awaiting:
            if (following := self.session.following(self._loop.active_checkpoint)) is not None:
                self._loop.segment(following, prefetch=True)
        self._show_scores()

    # ----- which image next

    def set_order(self, order: str) -> None:
        """The user chose "Next: in order | least sure first": stored in the project's settings
        (where the inference worker reads it); a setting not saved holds until the project closes."""
        if self.session is None:
            return
        if order not in next_image.ORDERS:
            raise ValueError(f"unknown next-image order {order!r}; one of {', '.join(next_image.ORDERS)}")
        self.session.project.settings[next_image.ORDER_KEY] = order
        self._saver.save_setting(next_image.ORDER_KEY, order, failed=lambda m: self.message.emit(m, 10000))
        self._order_changed(order)
        self._prefetch_next()

    def _order_changed(self, order: str) -> None:
        self._image_list.set_order(order)
        if order == next_image.UNCERTAIN:
            self._scores_timer.start()
            self._refresh_scores()
        else:
            self._scores_timer.stop()
            self._image_list.set_uncertainty({})

    def _refresh_scores(self) -> None:
        """Read the stored scores of the images not accepted, off this thread (``_show_scores`` then)."""
        if self.session is not None:
            self._scores.refresh(next_image.upcoming(self.session.project, None))

    def _show_scores(self) -> None:
        """The image list shows the known uncertainty of the images not accepted (proposals of the
        model proposing now), with "least sure first" only; nothing is read here."""
        session = self.session
        if session is None or self._loop is None or next_image.order_of(session.project) != next_image.UNCERTAIN:
            return
        ids = next_image.upcoming(session.project, None)
        self._image_list.set_uncertainty(session.scores.of(ids, self._loop.active_checkpoint))

    def _on_proposal(self, image_id: str, label: np.ndarray, checkpoint: str, learning: bool,
                     request_id: int) -> None:
        """Show a proposal under the label. ``learning``: from a model still learning, shown on
        request; drawn as a dashed outline without tint, and said so, as not yet helpful."""
        answered = (self._awaiting and self.current is not None and image_id == self.current.image_id
                    and request_id >= self._awaiting)
        if answered:
            self._awaiting = 0
            QTimer.singleShot(0, self._prefetch_next)  # after this proposal is on screen
        if self.session is None or not self.session.receive(image_id, label, checkpoint, learning, request_id):
            return
        fill, edge = self._learning_luts if learning else self._proposal_luts
        # coloured off this thread (35 ms for 1024 x 1024 on an idle core); shown in _on_overlay_built
        self._proposal_ticket = self._overlays.build(label, fill, edge, LEARNING_DASH if learning else 0)

    def _clear_proposal(self) -> None:
        self._proposal_ticket = 0  # a proposal still being coloured is not shown
        self._canvas.set_proposal(None)

    def _on_overlay_built(self, ticket: int, item: LabelOverlayItem) -> None:
        """The open image's proposal, coloured: put it under the label (unless it is no longer wanted)."""
        cur = self.current
        if ticket != self._proposal_ticket or cur is None or cur.proposal is None:
            return
        item.setVisible(self._actions["toggle_labels"].isChecked())
        item.hide_under(cur.doc.label)
        self._canvas.set_proposal(item)
        shown = ""
        if cur.proposal_learning:  # shown on request: a model still learning, or an image it is unsure of
            still_learning = self._loop is None or self._loop.withheld_reason(cur.proposal_checkpoint)
            shown = f" ({'still learning' if still_learning else 'unsure of this image'}: shown on request)"
        self._status.proposal.setText(
            f"proposal from model {cur.proposal_checkpoint}{shown}: correct it, then Accept (Enter)")
        if self._status.message.full_text().startswith(NO_PROPOSAL):  # said before it was shown on request
            self.message.emit("", 0)
        self.proposal_shown.emit(cur.image_id)

    def _on_proposal_failed(self, image_id: str, message: str) -> None:
        if self.current is not None and self.current.image_id == image_id:
            if self._awaiting:
                self._awaiting = 0
                self._prefetch_next()
            self._status.proposal.setText("")
            self.message.emit(f"{NO_PROPOSAL}{message}", 10000)

    def accept(self) -> None:
        """Accept proposal plus corrections (unlabelled pixels become background) and go on at once.
        The writer stores it off this thread; the image shows "accepted" (list, status bar) and the
        trainer hears of it only once it is on disk (``image_accepted``)."""
        cur = self.current
        if cur is None or cur.image_id in self.session.accepting:
            return
        self._controller.finish_stroke()
        # a large label is merged by the writer from its own copy, not here (encoding.merge_accept)
        request = self.session.accept_request(merged=not self._saver.merges_accept(cur.doc))
        self._requests[cur.image_id] = request
        self._saver.accept(cur.image_id, cur.doc, request.label, request.seconds, request.checkpoint,
                           request.proposal)
        self._clear_proposal()
        following = self.session.following(self._loop.active_checkpoint if self._loop is not None else None)
        self._moved_to[cur.image_id] = following
        if following is not None:
            self.show(following)

    def _on_accepted(self, image_id: str, stored: np.ndarray) -> None:
        """The writer has the accept on disk: say so, and tell the trainer."""
        request = self._requests.pop(image_id, None)
        self._moved_to.pop(image_id, None)
        session = self.session
        if request is None or session is None:
            return
        session.accepted(request, stored)
        project = session.project
        if self.current is not None and self.current.image_id == image_id:  # the user is back on it
            self._clear_proposal()
            self._canvas.overlay.set_label(self.current.doc.label)  # a large one adopted a new array
        self._image_list.set_status(project.image(image_id))
        self.message.emit(f"Accepted {Path(project.image(image_id).source).name}.", 5000)
        self.image_accepted.emit(image_id)
        if self._loop is not None:
            self._loop.image_accepted()
        if len(project.accepted_ids()) == len(project.images):
            self.message.emit("Every image in the project is accepted.", 10000)

    def _on_accept_failed(self, image_id: str, message: str) -> None:
        """Not accepted: said so, and the user is taken back to it (unless they went on elsewhere)."""
        request = self._requests.pop(image_id, None)
        moved_to = self._moved_to.pop(image_id, None)
        if request is None or self.session is None:
            return
        self.session.accept_failed(request)
        on_screen = self.switching_to or (self.current.image_id if self.current is not None else None)
        if moved_to is not None and moved_to == on_screen:
            self.show(image_id)
        self.error.emit("Not accepted", f"{message}\nYour label is kept in memory; try again.")

    # ----- view

    def set_window(self, window: tuple[float, float] | None) -> None:
        """Apply a display window (None: the image's default) to the open image."""
        cur = self.current
        if cur is None or cur.window is None:
            return
        cur.window = window or display.default_window(cur.image)
        self._canvas.update_image(display.render(cur.image, cur.window))
        self._windowing.show_window(cur.window)

    def show_position(self, x: float, y: float) -> None:
        if self.current is not None:
            names = ["not labelled", "background"] + [c.name for c in self.session.project.classes]
            self._status.show_pixel(x, y, self.current.image.pixels, self.current.doc.label, names)

    # ----- close

    def shutdown(self) -> None:
        """The window closes: no more image reads."""
        self._drop_wanted()
        self._loader.shutdown()
        self._scores.shutdown()
        self._overlays.shutdown()
