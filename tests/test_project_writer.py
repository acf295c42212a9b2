"""The project writer: every write of project.json and label files in order, off the GUI thread.
An image switch never waits, close waits (bounded) for the disk, a write that outlasts a wait is
neither lost nor silent, and an accept is reported only once it is on disk."""

from __future__ import annotations

import errno
import logging
import threading
import time

import numpy as np
import pytest

from segdesk.core import encoding, storage
from segdesk.core.project import STATUS_ACCEPTED, Project
from segdesk.qt.project_writer import ProjectWriter
from tests.conftest import disc_project, keeper_with_a_stroke


def slow_disk(monkeypatch) -> threading.Event:
    """Label writes wait until the returned event is set (a disk that has stalled)."""
    go = threading.Event()
    real = storage.write_label

    def write_label(path, label):
        assert go.wait(60)
        real(path, label)

    monkeypatch.setattr(storage, "write_label", write_label)
    return go


def test_a_stalled_write_outlasts_a_short_flush_and_is_still_written(qtbot, tmp_path, monkeypatch, caplog):
    project = disc_project(tmp_path, ["disc"], n_images=1)
    image_id = project.images[0].id
    go = slow_disk(monkeypatch)
    writer = ProjectWriter()
    writer.set_project(project)
    written = []
    writer.label_written.connect(lambda i, version, fields: written.append((i, version, fields["status"])))
    writer.write_label(image_id, np.full(project.images[0].shape, 2, np.uint8), 1)

    with caplog.at_level(logging.WARNING, logger="segdesk.qt.project_writer"):
        assert not writer.flush(timeout=0.05)
    assert "1 project write(s) still running" in caplog.text  # not passed over in silence

    go.set()
    assert writer.flush()  # the write that outlasted the wait is still waited for
    assert writer.saved_version(image_id) == 1 and project.label_path(image_id).exists()
    qtbot.waitUntil(lambda: written == [(image_id, 1, "in progress")], timeout=5000)
    assert Project.open(project.root, clean=False).image(image_id).status == "in progress"
    assert writer.shutdown()


def test_leaving_an_image_on_a_stalled_disk_keeps_its_label_in_memory_until_written(qtbot, tmp_path, monkeypatch):
    project, image_id, keeper, doc = keeper_with_a_stroke(tmp_path)
    go = slow_disk(monkeypatch)

    started = time.monotonic()
    keeper.close()  # switching to another image
    assert time.monotonic() - started < 1.0
    assert keeper.unsaved_ids() == [image_id]  # in memory while the disk is busy

    with qtbot.waitSignal(keeper.label_stored, timeout=20_000):
        go.set()
    assert not keeper.unsaved_ids()
    assert np.array_equal(project.read_label(image_id), doc.label)
    assert project.image(image_id).status == "in progress"  # the window's Project follows the disk
    assert keeper.take_unsaved(image_id) is None  # written: nothing is kept any more
    keeper.shutdown()


def test_an_accept_is_reported_only_once_on_disk_and_a_refused_one_changes_nothing(qtbot, tmp_path, monkeypatch):
    project, image_id, keeper, doc = keeper_with_a_stroke(tmp_path)
    go = slow_disk(monkeypatch)
    accepted, refused = [], []
    keeper.accepted.connect(lambda i, label: accepted.append(i))
    keeper.accept_failed.connect(lambda i, message: refused.append(message))
    label = np.where(doc.label == 0, 1, doc.label).astype(np.uint8)

    keeper.accept(image_id, doc, label, 12.0, None)  # returns at once: the disk has stalled
    assert project.image(image_id).status != STATUS_ACCEPTED and not accepted
    with qtbot.waitSignal(keeper.accepted, timeout=20_000):
        go.set()
    assert accepted == [image_id] and project.image(image_id).status == STATUS_ACCEPTED
    on_disk = Project.open(project.root, clean=False)
    assert on_disk.image(image_id).status == STATUS_ACCEPTED and on_disk.image(image_id).seconds_spent == 12.0
    assert np.array_equal(on_disk.read_label(image_id), label)
    assert np.array_equal(doc.label, label)  # the document shows what is stored
    assert not keeper.unsaved_ids()

    # the next accept meets a full disk: refused with the reason, nothing changes anywhere
    doc.begin_stroke(0, 3)  # the eraser: unlabelled pixels again, so the image is "in progress"
    doc.stroke_to(20, 20)
    doc.end_stroke()
    keeper.edited()
    qtbot.waitUntil(lambda: project.image(image_id).status == "in progress", timeout=20_000)

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "_write_call", full_disk)
    with qtbot.waitSignal(keeper.accept_failed, timeout=20_000):
        keeper.accept(image_id, doc, np.where(doc.label == 0, 1, doc.label).astype(np.uint8), 5.0, None)
    assert "No space left on device" in refused[-1] and accepted == [image_id]
    assert project.image(image_id).status == "in progress"
    assert Project.open(project.root, clean=False).image(image_id).seconds_spent == 12.0
    keeper.shutdown()


def test_settings_labels_and_accepts_queued_together_all_reach_project_json(qtbot, tmp_path):
    """One writer in order: no write of project.json loses another's change."""
    project = disc_project(tmp_path, ["disc"], n_images=3)
    writer = ProjectWriter()
    writer.set_project(project)
    a, b, c = (e.id for e in project.images)
    shape = project.images[0].shape
    writer.accept(a, np.ones(shape, np.uint8), 1, 3.0, None)
    writer.write_label(b, np.full(shape, 2, np.uint8), 1)
    writer.set_setting("next_image", "uncertain")
    writer.accept(c, np.full(shape, 2, np.uint8), 1, 4.0, "0001")
    assert writer.flush()
    on_disk = Project.open(project.root, clean=False)
    assert [e.status for e in on_disk.images] == [STATUS_ACCEPTED, "in progress", STATUS_ACCEPTED]
    assert on_disk.settings["next_image"] == "uncertain"
    assert writer.shutdown()


def test_a_report_of_the_project_open_before_does_not_reach_the_next_one(qtbot, tmp_path):
    """The same images in two projects have the same ids: a write of the first project, reported
    after the second was opened, must not change the second's entry."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = disc_project(tmp_path / "one", ["disc"], n_images=1)
    second = disc_project(tmp_path / "two", ["disc"], n_images=1)
    image_id = first.images[0].id
    assert second.images[0].id == image_id
    writer = ProjectWriter()
    writer.set_project(first)
    reports = []
    writer.label_written.connect(lambda i, version, fields: reports.append((version, fields["status"])))
    writer.write_label(image_id, np.full(first.images[0].shape, 2, np.uint8), 1)
    assert writer.flush()  # written; its report is queued, not delivered yet
    writer.set_project(second)
    with qtbot.waitSignal(writer.label_written, timeout=20_000):  # reports arrive in the writer's order
        writer.write_label(image_id, np.ones(second.images[0].shape, np.uint8), 7)
    assert reports == [(7, "in progress")]  # only the second project's
    assert Project.open(first.root, clean=False).image(image_id).status == "in progress"
    assert writer.shutdown()


def test_saving_a_label_makes_no_label_sized_copy_beside_it(tmp_path):
    """The writer saves what the user painted on images of any size: its own temporaries must stay
    small beside the label (the encoder's buffer is the PNG's, not traced here)."""
    import tracemalloc

    project = Project.create(tmp_path / "proj", ["lesion"])
    image = tmp_path / "big.png"
    storage.atomic_write_bytes(image, _png(np.zeros((1200, 1600), np.uint8)))
    image_id = project.add_images([image]).added[0].id
    label = np.zeros((1200, 1600), np.uint8)
    label[100:900, 200:1400] = 2
    tracemalloc.start()
    try:
        project.save_label(image_id, label)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert project.image(image_id).status == "in progress"  # painted, some pixels unsaid
    assert np.array_equal(project.read_label(image_id), label)
    assert peak < label.nbytes // 4


def _png(array: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def _large_image_project(tmp_path) -> tuple[Project, str]:
    project = Project.create(tmp_path / "proj", ["lesion"])
    image = tmp_path / "big.png"
    storage.atomic_write_bytes(image, _png(np.zeros((1200, 1600), np.uint8)))
    return project, project.add_images([image]).added[0].id


def test_an_accept_of_the_kept_label_merges_it_in_place_and_a_patch_before_adoption_applies_to_the_label_before(
        qtbot, tmp_path, monkeypatch):
    """A large label's accept (issue 14): the writer merges its kept copy with the proposal without a
    second label-sized array (0.4 GB at 20,000 px). Edited again before the document adopts what was
    stored, the patch applies to the label the user had (unlabelled pixels stay unlabelled), and the
    array reported as stored does not change."""
    import tracemalloc

    monkeypatch.setattr(encoding, "MERGE_ROWS_PIXELS", 1 << 16)  # strips of 40 rows, as 20,000 px labels get
    project, image_id = _large_image_project(tmp_path)
    label = np.zeros((1200, 1600), np.uint8)
    label[100:900, 200:1400] = encoding.class_value(0)  # the rest unlabelled
    label[0:50, :] = encoding.BACKGROUND
    proposal = np.full(label.shape, encoding.BACKGROUND, np.uint8)
    proposal[600:, :] = encoding.class_value(0)
    expected = encoding.merge_accept(label, proposal)
    writer = ProjectWriter()
    writer.set_project(project)
    stored = []
    writer.accepted.connect(lambda _i, version, _f, array: stored.append((version, array)))
    writer.keep_label(image_id, label.copy())
    assert writer.flush()
    tracemalloc.start()
    try:
        writer.accept_kept(image_id, None, None, 1, 5.0, "0001", proposal)
        assert writer.flush()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(project.read_label(image_id), expected)
    assert peak < label.nbytes // 4

    qtbot.waitUntil(lambda: bool(stored), timeout=20_000)
    writer.write_label_patch(image_id, (0, 0, 10, 10), np.full((10, 10), encoding.class_value(0), np.uint8), 2)
    assert writer.flush()
    edited = label.copy()
    edited[:10, :10] = encoding.class_value(0)
    assert np.array_equal(project.read_label(image_id), edited)
    assert stored[0][0] == 1 and np.array_equal(stored[0][1], expected)
    assert writer.shutdown()


@pytest.mark.parametrize("with_proposal", [True, False])
def test_an_accept_of_the_kept_label_that_fails_leaves_the_kept_label_unmerged(qtbot, tmp_path, monkeypatch,
                                                                             with_proposal):
    """The disk refuses the accept after the label was merged (into the proposal, or without one into
    the kept label, in place): the kept label is what it was, so the next stroke's patch stores the
    user's label, not the merge."""
    from segdesk.core.errors import StorageError

    project, image_id = _large_image_project(tmp_path)
    label = np.zeros((1200, 1600), np.uint8)
    label[100:300, 200:400] = encoding.class_value(0)
    proposal = np.full(label.shape, encoding.class_value(0), np.uint8)
    writer = ProjectWriter()
    writer.set_project(project)
    refused = []
    writer.accept_failed.connect(lambda _i, _v, message: refused.append(message))
    writer.write_label(image_id, label.copy(), 1, keep=True)
    assert writer.flush()
    real_accept = Project.accept

    def full_disk(self, image_id, label, *args, **kwargs):
        assert not encoding.has_unlabelled(label)  # merged by the writer before the disk is asked
        raise StorageError("No space left on device")

    monkeypatch.setattr(Project, "accept", full_disk)
    writer.accept_kept(image_id, None, None, 1, 5.0, "0001", proposal if with_proposal else None)
    assert writer.flush()
    qtbot.waitUntil(lambda: bool(refused), timeout=20_000)
    monkeypatch.setattr(Project, "accept", real_accept)
    writer.write_label_patch(image_id, (0, 0, 10, 10), np.full((10, 10), encoding.BACKGROUND, np.uint8), 2)
    assert writer.flush()
    edited = label.copy()
    edited[:10, :10] = encoding.BACKGROUND
    assert np.array_equal(project.read_label(image_id), edited)
    assert project.image(image_id).status != STATUS_ACCEPTED
    assert writer.shutdown()
