"""Accepting a large label (issue 14): above the save keeper's patch limit the GUI thread sends the
project writer only what changed, the writer merges its kept copy with the proposal
(encoding.merge_accept) and stores it, and the document adopts the stored array. Run on small
images with the limit lowered, in the real window."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox

from segdesk.core import encoding, storage
from segdesk.core.project import STATUS_ACCEPTED, Project
from segdesk.qt.main_window import MainWindow
from tests.conftest import disc_project, drag, show_window

LIMIT = 1000  # pixels: the 48 x 64 test images are "large"


@pytest.fixture
def large(monkeypatch):
    from segdesk.core import display
    from segdesk.qt import canvas, overlay, save_keeper

    monkeypatch.setattr(save_keeper, "PATCH_PIXELS", LIMIT)
    for module in (display, canvas, overlay):
        monkeypatch.setattr(module, "LARGE_PIXELS", LIMIT)


@pytest.fixture
def merges(monkeypatch) -> list[str]:
    """The names of the threads that merge an accept (encoding.merge_accept and merge_accept_into)."""
    threads: list[str] = []
    for name in ("merge_accept", "merge_accept_into"):
        real = getattr(encoding, name)

        def spy(*args, _real=real, **kwargs):
            threads.append(threading.current_thread().name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(encoding, name, spy)
    return threads


@pytest.fixture
def messages(monkeypatch):
    shown: list[tuple[str, str]] = []
    for kind in ("warning", "information", "critical"):
        monkeypatch.setattr(QMessageBox, kind, lambda _p, t, m, *a, **k: shown.append((t, m)))
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Discard)
    return shown


def _window(qtbot, tmp_path: Path, n_images: int = 1) -> MainWindow:
    project = disc_project(tmp_path, ["lesion"], n_images=n_images)
    project.settings["auto_train_after"] = 1000  # no training: these tests are about the accept
    project.save()
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), device="cpu")
    show_window(qtbot, w, active=False)
    assert w.open_project(project.root)
    qtbot.waitUntil(lambda: w.current is not None, timeout=20_000)
    assert w.current.doc.label.size > LIMIT
    w.canvas.set_zoom(4.0)
    return w


def _drag(w: MainWindow, points, value: int = 2) -> None:
    w.controller.set_value(value)
    drag(w, points)


def _show_proposal(qtbot, w: MainWindow) -> np.ndarray:
    """A proposal for the open image, as the loop delivers one: class 1 in the lower half."""
    h, wd = w.current.doc.shape
    proposal = np.full((h, wd), encoding.BACKGROUND, np.uint8)
    proposal[h // 2:, :] = encoding.class_value(0)
    with qtbot.waitSignal(w.session.proposal_shown, timeout=20_000):
        w.loop.proposal_ready.emit(w.current.image_id, proposal, "m1", False, 10**6)
    return proposal


def _on_disk(w: MainWindow, image_id: str) -> np.ndarray:
    return cv2.imread(str(w.project.label_path(image_id)), cv2.IMREAD_UNCHANGED)


def test_large_accept_is_merged_off_the_gui_thread_stored_and_shown(qtbot, tmp_path, large, merges, messages):
    w = _window(qtbot, tmp_path)
    image_id = w.current.image_id
    proposal = _show_proposal(qtbot, w)
    _drag(w, [(10, 10), (30, 12)])  # the user's class over the proposal's background
    _drag(w, [(10, 40), (30, 40)], value=encoding.BACKGROUND)  # and background over its class
    qtbot.waitUntil(lambda: w.project.image(image_id).status == "in progress", timeout=20_000)  # autosaved
    expected = encoding.merge_accept(w.current.doc.label.copy(), proposal)
    merges.clear()
    with qtbot.waitSignal(w.session.image_accepted, timeout=20_000):
        w.accept_current()
    assert merges and threading.main_thread().name not in merges  # merged, but not here
    assert w.project.image(image_id).status == STATUS_ACCEPTED
    assert np.array_equal(_on_disk(w, image_id), expected)
    assert Project.open(w.project.root, clean=False).image(image_id).status == STATUS_ACCEPTED
    # the window (still on the only image) shows the accepted label: the proposal's class where the
    # user said nothing, the user's pixels where they did
    assert np.array_equal(w.current.doc.label, expected)
    assert w.canvas.proposal is None
    colour = w.canvas.overlay.pixel_colour(50, 30)
    assert (colour.red(), colour.green(), colour.blue()) == w.project.classes[0].rgb
    assert w.canvas.overlay.pixel_colour(20, 40) != colour

    # the writer's copy became the accepted label too: a later stroke is saved as a patch on it
    _drag(w, [(40, 5), (50, 5)])
    assert w.saver.flush()
    qtbot.waitUntil(lambda: w.saver.unsaved_ids() == [], timeout=20_000)
    assert np.array_equal(_on_disk(w, image_id), w.current.doc.label)
    assert np.count_nonzero(w.current.doc.label != expected) > 0
    assert not messages
    w.close()


def test_large_accept_failing_keeps_the_label(qtbot, tmp_path, large, monkeypatch, messages):
    """A read-only project folder (simulated where bytes reach the disk: tests run as root): the
    accept is refused with the reason, nothing is accepted, the user's label stays as painted (not
    merged), and it is saved and accepted once the disk takes writes again."""
    w = _window(qtbot, tmp_path, n_images=2)
    image_id = w.current.image_id
    real_write = storage._write_call
    _drag(w, [(10, 10), (30, 12)])
    qtbot.waitUntil(lambda: w.project.image(image_id).status == "in progress", timeout=20_000)

    def read_only(fd, data):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(storage, "_write_call", read_only)
    _drag(w, [(10, 30), (30, 30)])  # not on disk yet
    painted = w.current.doc.label.copy()
    before_on_disk = _on_disk(w, image_id)
    w.accept_current()
    qtbot.waitUntil(lambda: any(t == "Not accepted" for t, _m in messages) and w.current is not None
                    and w.current.image_id == image_id, timeout=20_000)
    assert any("Read-only file system" in m for t, m in messages if t == "Not accepted")
    assert w.project.image(image_id).status != STATUS_ACCEPTED
    assert np.array_equal(w.current.doc.label, painted)  # unlabelled pixels are still unlabelled
    assert (painted == encoding.UNLABELLED).any()
    assert np.array_equal(_on_disk(w, image_id), before_on_disk)

    monkeypatch.setattr(storage, "_write_call", real_write)
    w.save_now()
    qtbot.waitUntil(lambda: np.array_equal(_on_disk(w, image_id), painted), timeout=20_000)
    with qtbot.waitSignal(w.session.image_accepted, timeout=20_000):
        w.accept_current()
    assert np.array_equal(_on_disk(w, image_id), encoding.merge_accept(painted))
    w.close()


def test_edits_while_a_large_accept_is_written_are_kept(qtbot, tmp_path, large, monkeypatch, messages):
    """The user paints on while the accept is on its way (a one-image project stays on the image):
    the accept stores the label as it was, the document keeps the newer edits (not merged), and
    the disk ends with the document's label."""
    w = _window(qtbot, tmp_path)
    image_id = w.current.image_id
    _drag(w, [(10, 10), (30, 12)])
    at_accept = encoding.merge_accept(w.current.doc.label)
    release = threading.Event()
    real_accept = Project.accept

    def slow_accept(self, *args, **kwargs):
        assert release.wait(20)
        return real_accept(self, *args, **kwargs)

    monkeypatch.setattr(Project, "accept", slow_accept)
    w.accept_current()
    _drag(w, [(10, 40), (30, 40)])
    edited = w.current.doc.label.copy()
    stored = []
    w.saver.accepted.connect(lambda _i, label: stored.append(label.copy()))
    release.set()
    qtbot.waitUntil(lambda: bool(stored), timeout=20_000)
    assert np.array_equal(stored[0], at_accept)
    assert np.array_equal(w.current.doc.label, edited)
    assert w.saver.flush()
    qtbot.waitUntil(lambda: w.saver.unsaved_ids() == [], timeout=20_000)
    assert np.array_equal(_on_disk(w, image_id), edited)
    # edited after the accept, unlabelled pixels left: the window's project says so once the writer's
    # report of that save is delivered (flush waits for the write, not for its report)
    qtbot.waitUntil(lambda: w.project.image(image_id).status == "in progress", timeout=20_000)
    w.close()


def test_after_a_large_accept_the_writer_keeps_only_the_file_and_a_later_stroke_is_still_saved(
        qtbot, tmp_path, large, messages):
    """Once the document shows the stored label, the writer holds no second copy of it (0.4 GB at
    20,000 px): a later stroke is patched onto the stored file, read again; and where that file has
    gone meanwhile, the stroke is still saved, whole."""
    w = _window(qtbot, tmp_path)
    image_id = w.current.image_id
    _show_proposal(qtbot, w)
    _drag(w, [(10, 10), (30, 12)])
    with qtbot.waitSignal(w.session.image_accepted, timeout=20_000):
        w.accept_current()
    assert w.saver.flush()  # the adoption has reached the writer
    assert w.saver.writer._kept == (image_id, None)
    _drag(w, [(40, 5), (50, 5)])
    assert w.saver.flush()
    qtbot.waitUntil(lambda: w.saver.unsaved_ids() == [], timeout=20_000)
    assert np.array_equal(_on_disk(w, image_id), w.current.doc.label)
    assert (w.current.doc.label[w.current.doc.shape[0] // 2:] == encoding.class_value(0)).any()  # the proposal's part

    # accepted again, then the stored file vanishes before the next stroke
    with qtbot.waitSignal(w.session.image_accepted, timeout=20_000):
        w.accept_current()
    assert w.saver.flush()
    w.project.label_path(image_id).unlink()
    _drag(w, [(40, 20), (50, 20)], value=encoding.BACKGROUND)
    assert w.saver.flush()
    qtbot.waitUntil(lambda: w.saver.unsaved_ids() == [] and w.project.label_path(image_id).exists(), timeout=20_000)
    assert np.array_equal(_on_disk(w, image_id), w.current.doc.label)
    w.close()


def test_merge_accept_in_strips_is_the_merge(monkeypatch):
    rng = np.random.default_rng(0)
    painted = rng.integers(0, 4, (37, 23)).astype(np.uint8)
    proposal = rng.integers(0, 4, (37, 23)).astype(np.uint8)
    monkeypatch.setattr(encoding, "MERGE_ROWS_PIXELS", 50)  # strips of two rows
    for prop in (proposal, None):
        expected = painted.copy()
        if prop is not None:
            expected[painted == 0] = prop[painted == 0]
        expected[expected == 0] = encoding.BACKGROUND
        assert np.array_equal(encoding.merge_accept(painted, prop), expected)
        in_place = painted.copy()
        encoding.merge_accept_into(in_place, prop)
        assert np.array_equal(in_place, expected)
    with pytest.raises(ValueError, match="proposal"):
        encoding.merge_accept_into(painted.copy(), proposal[:10])


def test_a_merge_onto_the_proposal_is_the_merge(monkeypatch):
    rng = np.random.default_rng(2)
    monkeypatch.setattr(encoding, "MERGE_ROWS_PIXELS", 50)
    painted = rng.integers(0, 4, (37, 23)).astype(np.uint8)
    proposal = rng.integers(0, 4, (37, 23)).astype(np.uint8)
    expected = encoding.merge_accept(painted, proposal)
    encoding.merge_accept_onto(proposal, painted)
    assert np.array_equal(proposal, expected)
    with pytest.raises(ValueError, match="proposal"):
        encoding.merge_accept_onto(proposal[:10], painted)


def test_a_merge_in_place_is_undone_by_the_unlabelled_bits(monkeypatch):
    """The writer merges a large accept in place and keeps one bit a pixel to undo it: widths that
    are not a multiple of 8 and strips of a few rows give back exactly the label merged from."""
    rng = np.random.default_rng(1)
    monkeypatch.setattr(encoding, "MERGE_ROWS_PIXELS", 50)
    for shape in ((37, 23), (5, 8), (1, 1), (16, 9)):
        painted = rng.integers(0, 4, shape).astype(np.uint8)
        bits = encoding.unlabelled_bits(painted)
        assert bits.shape == (shape[0], (shape[1] + 7) // 8)
        merged = painted.copy()
        encoding.merge_accept_into(merged, rng.integers(1, 4, shape).astype(np.uint8))
        assert not encoding.has_unlabelled(merged)
        encoding.restore_unlabelled(merged, bits)
        assert np.array_equal(merged, painted)


def test_project_accept_in_place_stores_the_given_array_and_by_default_copies(tmp_path):
    """The writer gives Project.accept a label merged with the proposal that it owns: stored without
    a second copy (0.4 GB at 20,000 px); a caller's label is never changed otherwise."""
    project = disc_project(tmp_path, ["disc"], n_images=2)
    first, second = project.images
    label = np.zeros(first.shape, np.uint8)
    label[5:10, 5:10] = encoding.label_value(1)  # the class; the rest unlabelled
    kept = label.copy()
    stored = project.accept(first.id, label)
    assert stored is not label and np.array_equal(label, kept)
    given = label.copy()
    stored_in_place = project.accept(second.id, given, in_place=True)
    assert stored_in_place is given and np.array_equal(given, stored)
    assert np.array_equal(project.read_label(second.id), encoding.merge_accept(kept))
