"""The save keeper with reports delivered late: a write failure still queued when the window closed
must not schedule retries on a writer that is gone (it raised in the event loop on a loaded
machine), and a write's report arriving after an accept must not undo the accept. A large label
is saved as patches."""

from __future__ import annotations

import numpy as np

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


def test_a_large_label_is_saved_as_patches_and_the_file_is_always_the_whole_label(qtbot, tmp_path, monkeypatch):
    """Over PATCH_PIXELS the writer keeps the label and each save sends only the changed box: after
    strokes, a fill, a polygon, undo, redo, a click's replace and a whole new label, the file on disk
    is exactly the document's label, and no whole copy was sent (the writer read its copy, all
    unlabelled, when the document was opened)."""
    from segdesk.qt import save_keeper

    monkeypatch.setattr(save_keeper, "PATCH_PIXELS", 100)  # the 48 x 64 test label counts as large
    project, image_id, keeper, doc = keeper_with_a_stroke(tmp_path)
    whole, patches = [], []
    real_whole, real_patch = keeper.writer.write_label, keeper.writer.write_label_patch
    monkeypatch.setattr(keeper.writer, "write_label", lambda *a, **k: whole.append(a[0]) or real_whole(*a, **k))
    monkeypatch.setattr(keeper.writer, "write_label_patch", lambda *a: patches.append(a[1]) or real_patch(*a))

    def save_and_check():
        keeper.edited()
        assert keeper.flush(20)
        qtbot.waitUntil(lambda: keeper.writer.saved_version(image_id) == doc.version, timeout=20_000)
        assert np.array_equal(project.read_label(image_id), doc.label)

    save_and_check()  # the fixture's stroke
    doc.begin_stroke(1, 2)
    doc.stroke_to(40, 30)
    doc.stroke_to(50, 35)
    doc.end_stroke()
    save_and_check()
    doc.fill(60, 45, 2)
    save_and_check()
    doc.polygon([(1, 40), (10, 40), (5, 47)], 2)
    save_and_check()
    doc.undo()
    save_and_check()
    doc.redo()
    save_and_check()
    doc.replace((20, 20, 30, 30), np.full((10, 10), 1, np.uint8))
    save_and_check()
    assert whole == [] and len(patches) >= 6  # every edit that changed something (a fill may not)
    assert patches[1] == (28, 38, 38, 53) and patches[-1] == (20, 20, 30, 30)  # boxes, not the label

    doc.set_label(np.full((48, 64), 2, np.uint8))  # a whole new label is one whole-sized patch
    save_and_check()
    assert patches[-1] == (0, 0, 48, 64)

    # a write that fails: the writer still has the change, and the retry (a whole copy) writes it all
    whole.clear()
    from segdesk.core import storage

    def full(*_a, **_k):
        raise storage.StorageError("No space left on device")

    real_write = storage.write_label
    monkeypatch.setattr(storage, "write_label", full)
    doc.begin_stroke(1, 2)
    doc.stroke_to(5, 5)
    doc.end_stroke()
    with qtbot.waitSignal(keeper.writer.label_failed, timeout=20_000):
        keeper.edited()
    monkeypatch.setattr(storage, "write_label", real_write)  # the disk has room again
    keeper.save_all()
    assert keeper.flush(20)
    qtbot.waitUntil(lambda: keeper.writer.saved_version(image_id) == doc.version, timeout=20_000)
    assert np.array_equal(project.read_label(image_id), doc.label) and whole == [image_id]


def test_a_large_label_opened_from_the_disk_is_never_copied_whole(qtbot, tmp_path, monkeypatch):
    """The writer reads its kept copy from the disk itself, so even the first save is a patch."""
    from segdesk.core.label_document import LabelDocument
    from segdesk.qt import save_keeper

    monkeypatch.setattr(save_keeper, "PATCH_PIXELS", 100)
    project, image_id, keeper, doc = keeper_with_a_stroke(tmp_path)
    keeper.edited()  # the fixture's stroke: a label file now exists
    assert keeper.flush(20)
    qtbot.waitUntil(lambda: keeper.writer.saved_version(image_id) == doc.version, timeout=20_000)
    keeper.close()
    assert keeper.flush(20)
    whole = []
    real = keeper.writer.write_label
    monkeypatch.setattr(keeper.writer, "write_label", lambda *a, **k: whole.append(a[0]) or real(*a, **k))
    reopened = LabelDocument(project.read_label(image_id))  # as the image loader opens it
    keeper.opened(image_id, reopened, on_disk=True)
    reopened.begin_stroke(1, 2)
    reopened.stroke_to(50, 40)
    reopened.end_stroke()
    keeper.edited()
    assert keeper.flush(20)
    qtbot.waitUntil(lambda: keeper.writer.saved_version(image_id) == reopened.version, timeout=20_000)
    assert whole == []
    stored = project.read_label(image_id)
    assert np.array_equal(stored, reopened.label) and (stored == encoding.BACKGROUND).any()
    assert (stored == 2).any()  # the fixture's stroke, from the copy the writer read
