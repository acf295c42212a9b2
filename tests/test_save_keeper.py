"""The save keeper with reports delivered late: a write failure still queued when the window closed
must not schedule retries on a writer that is gone (it raised in the event loop on a loaded
machine), and a write's report arriving after an accept must not undo the accept."""

from __future__ import annotations

from segdesk.core import encoding
from segdesk.core.project import STATUS_ACCEPTED, Project
from tests.conftest import keeper_with_a_stroke


def test_a_failure_delivered_after_shutdown_schedules_nothing(qtbot, tmp_path):
    project, image_id, keeper, doc = keeper_with_a_stroke(tmp_path)
    keeper.edited()
    keeper.flush()
    keeper.shutdown()
    stored = project.read_label(image_id)
    assert stored is not None and stored.any()  # the edit reached the disk before shut-down

    # the writer's "failed" signal for an earlier write, delivered late
    keeper.writer.label_failed.emit(image_id, doc.version, "No space left on device")
    assert not keeper._retry.isActive()
    doc.begin_stroke(2, 3)
    doc.stroke_to(30, 20)
    doc.end_stroke()
    keeper.edited()  # nothing is scheduled on the stopped writer, nothing raises
    keeper.save_all()


def test_a_write_reported_after_an_accept_keeps_the_image_accepted(qtbot, tmp_path):
    """An autosave and the accept that follows it are reported in the writer's order: the write's
    report ("in progress"), arriving after the accept was asked for, does not undo the accept."""
    project, image_id, keeper, doc = keeper_with_a_stroke(tmp_path)
    keeper.edited()  # written; its report is queued behind the accept below
    keeper.accept(image_id, doc, encoding.merge_accept(doc.label), 1.0, None)
    with qtbot.waitSignal(keeper.accepted, timeout=20_000):
        pass
    assert project.image(image_id).status == STATUS_ACCEPTED
    assert Project.open(project.root, clean=False).image(image_id).status == STATUS_ACCEPTED
    keeper.shutdown()
