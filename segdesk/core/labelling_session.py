"""The labelling session: one image after another, each labelled (on top of a proposal) until accepted.

Qt-free state and rules: which image is open, which proposal answer it shows (answers to older
requests are stale and dropped, DESIGN.md "Threads"), the time spent on each image until it is
accepted, and what accept stores (durable, through Project.accept). qt/labelling_session.py puts
the session on screen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from segdesk.core import display, encoding, imageio, next_image
from segdesk.core.errors import ImageReadError
from segdesk.core.image import Image
from segdesk.core.label_document import LabelDocument
from segdesk.core.project import STATUS_ACCEPTED, Project


class ImageChanged(ImageReadError):
    """The image file no longer has the size the project recorded: it was changed outside segdesk."""


def read_checked(path: Path, frame: int | None, shape: tuple[int, int]) -> Image:
    """The image at ``path`` (``frame`` of a multi-frame file), which the project recorded as
    ``shape`` (height, width); ImageReadError when unreadable, ImageChanged when of another size.
    Pure file reading: the image loader calls it off the GUI thread."""
    image = imageio.read_image(path, frame=frame)
    if image.shape2d != tuple(shape):
        raise ImageChanged(f"{path} is now {image.width}x{image.height}, but the project recorded "
                           f"{shape[1]}x{shape[0]}: the file was changed outside segdesk.")
    return image


@dataclass
class OpenImage:
    """The image being labelled: its pixels, display window, label document and proposal."""

    image_id: str
    image: Image
    doc: LabelDocument
    window: tuple[float, float] | None  # display window for images with more than 8 bits
    opened_at: float  # on the session's clock; restarts when the image is accepted
    proposal: np.ndarray | None = None  # label encoding (1 = background); shown under the label
    proposal_checkpoint: str | None = None
    proposal_learning: bool = False  # from a model still learning, shown on request ("show anyway")
    newest_request: int = 0  # answers to older proposal requests for this image are stale


@dataclass(frozen=True)
class AcceptRequest:
    """An accept on its way to the disk."""

    image_id: str
    # what is stored: unlabelled pixels made background; None when the writer merges its own copy
    # of the label with ``proposal`` (a large label: encoding.merge_accept off the GUI thread)
    label: np.ndarray | None
    seconds: float  # time spent on the image, counted in this accept
    checkpoint: str | None  # the model whose proposal it corrects
    proposal: np.ndarray | None = None  # the proposal shown, when label is None: the writer merges into it


class LabellingSession:
    def __init__(self, project: Project, clock: Callable[[], float] = time.monotonic, scores=None):
        """``scores``: where "least sure first" finds the stored proposal uncertainties, an object
        with next_image.Scores's ``of``; the window passes one that reads them off its thread."""
        self.project = project
        self.current: OpenImage | None = None
        self._clock = clock
        self._spent: dict[str, float] = {}  # seconds on images not yet accepted, open time not included
        self.scores = scores if scores is not None else next_image.Scores(project.root / "proposals")
        self.accepting: set[str] = set()  # images whose accept is on its way to the disk

    # ----- which image

    def first(self) -> str | None:
        """The image to start with: the first not accepted, else the first; None in an empty project."""
        images = self.project.images
        entry = next((e for e in images if e.status != STATUS_ACCEPTED), images[0] if images else None)
        return entry.id if entry is not None else None

    def step(self, step: int, after: str | None = None) -> str | None:
        """The image ``step`` places from ``after`` (default: the open one; the window passes the
        image on its way, so that quick presses go on from it), wrapping around; the first when
        none is open."""
        ids = [e.id for e in self.project.images]
        if not ids:
            return None
        after = after or (self.current.image_id if self.current else None)
        index = ids.index(after) if after in ids else -step
        return ids[(index + step) % len(ids)]

    def following(self, checkpoint: str | None = None, after: str | None = None) -> str | None:
        """The image to label after ``after`` (default: the open one; worth a proposal in advance,
        and where accept goes on): the next not accepted in the project's order, or, with the
        project's "least sure first" setting, the one whose proposal from ``checkpoint`` (the model
        proposing now) is least sure (segdesk.core.next_image). None when no other image is left."""
        after = after or (self.current.image_id if self.current is not None else None)
        if after is None:
            return None
        choice = next_image.choose(self.project, after, next_image.order_of(self.project), checkpoint, self.scores)
        if choice in self.accepting:  # accepted a moment ago, not on disk yet: the next not accepted
            choice = next((i for i in next_image.upcoming(self.project, after) if i not in self.accepting), None)
        return choice

    def needs_proposal(self) -> bool:
        return self.current is not None and self.project.image(self.current.image_id).status != STATUS_ACCEPTED

    # ----- open and leave

    def read(self, image_id: str) -> Image:
        """The image's pixels; ImageReadError when the file is unreadable, ImageChanged when its size
        is not the one the project recorded."""
        entry = self.project.image(image_id)
        return read_checked(self.project.source_path(entry), entry.frame, entry.shape)

    def open(self, image_id: str, image: Image, doc: LabelDocument,
             window: tuple[float, float] | None | str = "default") -> OpenImage:
        """``image`` (from read) is now labelled in ``doc`` shown with ``window`` (by default the
        image's default window); the one open before must have been left."""
        window = display.default_window(image) if window == "default" else window
        self.current = OpenImage(image_id, image, doc, window, self._clock())
        return self.current

    def leave(self) -> None:
        """Close the open image; its time so far counts when it is accepted later."""
        if self.current is not None:
            self._spent[self.current.image_id] = self.seconds_spent(self.current.image_id)
        self.current = None

    def seconds_spent(self, image_id: str) -> float:
        """Seconds spent on an image since it was last accepted: earlier visits plus the open one."""
        cur = self.current
        open_for = self._clock() - cur.opened_at if cur is not None and cur.image_id == image_id else 0.0
        return self._spent.get(image_id, 0.0) + open_for

    # ----- proposals

    def asked(self, request_id: int) -> int:
        """A proposal for the open image was asked for with ``request_id`` (0: none was); returns it."""
        if self.current is not None:
            self.current.newest_request = max(self.current.newest_request, request_id)
        return request_id

    def receive(self, image_id: str, label: np.ndarray, checkpoint: str, learning: bool, request_id: int) -> bool:
        """An answer to a proposal request: True when it is now the open image's proposal. Dropped: an
        answer for another image (a prefetch, or an image the user left: cached, not shown), for an
        accepted image, of another size, or to an older request than one asked or shown since."""
        cur = self.current
        if cur is None or cur.image_id != image_id or not self.needs_proposal():
            return False
        if request_id < cur.newest_request or label.shape != cur.doc.shape:
            return False
        cur.newest_request = request_id
        cur.proposal, cur.proposal_checkpoint, cur.proposal_learning = label, checkpoint, learning
        return True

    # ----- accept

    def accept_request(self, merged: bool = True) -> AcceptRequest:
        """What accepting the open image stores: the proposal plus corrections (unlabelled pixels
        become background), with the time spent on it. Nothing changes until ``accepted``: the
        window has the writer store it (Project.accept) off the GUI thread. ``merged`` False: the
        request carries the proposal instead of the merged label, and whoever stores it merges
        (encoding.merge_accept) its own copy of the document's label: a large label is not
        merged and copied whole here."""
        cur = self.current
        label = encoding.merge_accept(cur.doc.label, cur.proposal) if merged else None
        self.accepting.add(cur.image_id)
        return AcceptRequest(cur.image_id, label, self.seconds_spent(cur.image_id), cur.proposal_checkpoint,
                             None if merged else cur.proposal)

    def accepted(self, request: AcceptRequest, stored: np.ndarray) -> None:
        """``request`` is on disk (``stored``): the time it counted starts anew; the image, if still
        open, shows no proposal any more."""
        self.accepting.discard(request.image_id)
        # seconds_spent = _spent + open time, so this leaves the time since the request
        self._spent[request.image_id] = self._spent.get(request.image_id, 0.0) - request.seconds
        cur = self.current
        if cur is not None and cur.image_id == request.image_id:
            cur.proposal = None

    def accept_failed(self, request: AcceptRequest) -> None:
        """``request`` was not stored: the image is not accepted, its time keeps counting."""
        self.accepting.discard(request.image_id)

    def accept(self) -> np.ndarray:
        """Accept the open image and wait for the disk (Project.accept): ``accept_request`` and
        ``accepted`` in one; returns the stored label. On a SegdeskError nothing changes and the
        time keeps counting."""
        cur = self.current
        request = self.accept_request()
        try:
            stored = self.project.accept(request.image_id, request.label, request.seconds,
                                         proposal_checkpoint=request.checkpoint)
        except BaseException:
            self.accept_failed(request)
            raise
        self.accepted(request, stored)
        cur.doc.set_label(stored)
        return stored
