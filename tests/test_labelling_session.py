"""The labelling session without a window: time spent, accept, stale proposals, which image next."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segdesk.core.errors import SegdeskError, StorageError
from segdesk.core.label_document import LabelDocument
from segdesk.core.labelling_session import ImageChanged, LabellingSession
from segdesk.core.project import STATUS_ACCEPTED, Project
from tests.conftest import disc_project


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def project(tmp_path) -> Project:
    return disc_project(tmp_path, ["lesion"])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def session(project, clock) -> LabellingSession:
    return LabellingSession(project, clock)


def open_image(session: LabellingSession, image_id: str):
    label = np.zeros(session.project.image(image_id).shape, np.uint8)
    return session.open(image_id, session.read(image_id), LabelDocument(label))


def test_time_spent_adds_up_over_visits_and_is_stored_on_accept(session, clock):
    first, second, _ = (e.id for e in session.project.images)
    open_image(session, first)
    clock.now += 10
    session.leave()
    open_image(session, second)
    clock.now += 100  # time on another image does not count for the first
    session.leave()
    open_image(session, first)
    clock.now += 5
    assert session.seconds_spent(first) == pytest.approx(15)
    session.accept()
    assert session.project.image(first).seconds_spent == pytest.approx(15)
    assert session.seconds_spent(first) == 0  # the time restarts when the user stays on the image
    clock.now += 3
    session.leave()
    assert session.seconds_spent(first) == pytest.approx(3)


def test_accept_stores_proposal_plus_corrections_with_unlabelled_as_background(session):
    image_id = session.first()
    cur = open_image(session, image_id)
    proposal = np.ones(cur.doc.shape, np.uint8)
    proposal[10:20, 10:20] = 2
    assert session.receive(image_id, proposal, "c1", False, session.asked(1))
    cur.doc.begin_stroke(1, 2)  # a correction: background where the proposal said lesion
    cur.doc.stroke_to(15, 15)
    cur.doc.end_stroke()
    corrected = cur.doc.label != 0
    assert corrected.any() and (proposal[corrected] == 2).all()
    expected = proposal.copy()
    expected[corrected] = 1
    stored = session.accept()
    assert np.array_equal(stored, expected)
    assert np.array_equal(session.project.read_label(image_id), expected)
    assert np.array_equal(cur.doc.label, expected) and cur.proposal is None
    entry = session.project.image(image_id)
    assert entry.status == STATUS_ACCEPTED
    assert not session.needs_proposal()  # an accepted image gets no proposal shown
    assert not session.receive(image_id, proposal, "c1", False, 2)


def test_accept_without_a_proposal_makes_every_unlabelled_pixel_background(session):
    cur = open_image(session, session.first())
    stored = session.accept()
    assert (stored == 1).all() and (cur.doc.label == 1).all()


def test_a_failed_accept_changes_nothing_and_counts_no_time_twice(session, clock, monkeypatch):
    image_id = session.first()
    open_image(session, image_id)
    clock.now += 7

    def refuse(*_args, **_kwargs):
        raise StorageError("disk full")

    with monkeypatch.context() as m:
        m.setattr(session.project, "accept", refuse)
        with pytest.raises(SegdeskError):
            session.accept()
    assert session.project.image(image_id).status != STATUS_ACCEPTED
    clock.now += 2
    session.accept()
    assert session.project.image(image_id).seconds_spent == pytest.approx(9)


def test_stale_proposals_are_dropped(session):
    first, second, _ = (e.id for e in session.project.images)
    cur = open_image(session, first)
    label = np.ones(cur.doc.shape, np.uint8)
    newer = label.copy()
    newer[0, 0] = 2
    assert not session.receive(second, label, "c1", False, 5)  # a prefetch for another image: not shown
    session.asked(4)
    session.asked(0)  # nothing asked (no model yet): the newest request stays
    assert not session.receive(first, label, "c1", False, 3)  # older than the request on its way
    assert cur.proposal is None
    assert session.receive(first, label, "c1", False, 4)
    assert session.receive(first, newer, "c2", False, 6)  # asked by someone else: newer, shown
    assert not session.receive(first, label, "c1", False, 5)  # arrives after a newer answer
    assert np.array_equal(cur.proposal, newer) and cur.proposal_checkpoint == "c2"
    assert not session.receive(first, np.ones((3, 3), np.uint8), "c2", False, 7)  # not this image's size
    session.leave()
    assert not session.receive(first, label, "c1", False, 8)  # the user left the image


def test_requests_count_per_visit(session):
    """Coming back to an image, an answer to a request made before is shown again (it may be the
    prefetch that the loop answers from its cache or still computes)."""
    first = session.first()
    open_image(session, first)
    session.asked(9)
    session.leave()
    cur = open_image(session, first)
    assert cur.newest_request == 0 and cur.proposal is None
    assert session.receive(first, np.ones(cur.doc.shape, np.uint8), "c1", True, 7)
    assert cur.proposal_learning


def test_which_image_comes_first_next_and_after(session):
    ids = [e.id for e in session.project.images]
    assert session.first() == ids[0]
    assert session.step(+1) == ids[0] and session.step(-1) == ids[0]  # nothing open yet
    assert session.following() is None
    open_image(session, ids[0])
    assert session.step(+1) == ids[1] and session.step(-1) == ids[2]
    assert session.following() == ids[1]
    session.accept()
    open_image(session, ids[1])
    assert session.following() == ids[2]
    session.accept()
    open_image(session, ids[2])
    assert session.following() is None  # the only one left is the open one
    assert LabellingSession(session.project).first() == ids[2]  # the first one not accepted


def test_an_image_changed_outside_segdesk_is_not_opened(session, tmp_path):
    image_id = session.first()
    entry = session.project.image(image_id)
    cv2.imwrite(str(session.project.source_path(entry)), np.zeros((10, 10), np.uint8))
    with pytest.raises(ImageChanged, match="changed outside segdesk"):
        session.read(image_id)
    assert session.current is None


def test_an_empty_project_has_no_image_to_show(tmp_path):
    session = LabellingSession(Project.create(tmp_path / "empty", ["lesion"]))
    assert session.first() is None and session.step(+1) is None
