"""Image switches read the image on another thread: the image on screen stays until the next one
arrives, an arrival the user has moved on from is dropped, and a file changed after it was read
ahead is read again (new pixels shown, or "Image changed" when its size changed)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from segdesk.core.project import Project
from segdesk.qt.main_window import MainWindow
from tests.conftest import disc_project, show_window, write_disc_image


@pytest.fixture
def messages(monkeypatch):
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _p, title, text, *a, **k: shown.append((title, text)))
    return shown


@pytest.fixture
def window(qtbot, tmp_path, messages):
    project = disc_project(tmp_path, ["lesion"], n_images=4)
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    show_window(qtbot, w)  # key presses reach only the active window
    with qtbot.waitSignal(w.session.image_shown, timeout=20_000):
        assert w.open_project(project.root)
    yield w
    w.close()


def test_the_image_stays_until_the_next_arrives_and_a_stale_arrival_is_dropped(qtbot, window):
    w = window
    ids = [e.id for e in w.project.images]
    assert w.current.image_id == ids[0]
    arrived = []
    w.session.image_shown.connect(arrived.append)
    with qtbot.waitSignal(w.session.image_shown, timeout=20_000):
        QTest.keyClick(w, Qt.Key.Key_PageDown)  # next image, twice, before the first has arrived
        QTest.keyClick(w, Qt.Key.Key_PageDown)
        assert w.current.image_id == ids[0]  # still on screen, still editable
        assert w.session.switching_to == ids[2]  # the second press went on from the image on its way
    assert w.current.image_id == ids[2] and arrived == [ids[2]]
    assert w.image_list.list.currentRow() == 2

    # a click on the image shown calls off a switch on its way
    w.show_image(ids[3])
    w.show_image(ids[2])
    assert w.session.switching_to is None
    with qtbot.waitSignal(w.session.image_shown, timeout=20_000):
        w.show_image(ids[0])  # read after ids[3] by the one reader: ids[3] would have arrived first
    assert arrived == [ids[2], ids[0]]


def test_a_file_changed_after_it_was_read_ahead_is_read_again(qtbot, window, messages):
    w = window
    ids = [e.id for e in w.project.images]
    loader = w.session._loader
    key = (str(w.project.root), ids[1])
    qtbot.waitUntil(lambda: key in loader._cache, timeout=20_000)  # the next image was read ahead
    path = w.project.source_path(w.project.image(ids[1]))
    stat = os.stat(path)

    # same size, new pixels (edited outside segdesk): the new pixels are shown
    new = np.full((48, 64, 3), (10, 200, 30), np.uint8)
    cv2.imwrite(str(path), new)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    with qtbot.waitSignal(w.session.image_shown, timeout=20_000):
        w.show_image(ids[1])
    assert w.current.image_id == ids[1]
    assert np.array_equal(w.current.image.pixels[0, 0], (30, 200, 10))  # BGR on disk, RGB read
    assert not messages

    # another size: refused as before, and the image on screen stays
    qtbot.waitUntil(lambda: (str(w.project.root), ids[2]) in loader._cache, timeout=20_000)
    path2 = w.project.source_path(w.project.image(ids[2]))
    write_disc_image(path2, size=(30, 30))
    os.utime(path2, ns=(stat.st_atime_ns, stat.st_mtime_ns + 9_000_000_000))
    with qtbot.waitSignal(w.session.image_failed, timeout=20_000):
        w.show_image(ids[2])
    assert messages[-1][0] == "Image changed" and "changed outside segdesk" in messages[-1][1]
    assert w.current.image_id == ids[1]


def test_the_first_image_gets_its_proposal_once_the_model_has_loaded(qtbot, tmp_path, messages):
    """Opening a project shows its first image at once, usually before the inference worker has
    loaded the current model; the proposal must follow when the model arrives, without pressing S."""
    from segdesk.demo import _install_model, demo_model_dir

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        write_disc_image(images / f"disc{i}.png", size=(64, 64), seed=50 + i)
    project = Project.create(tmp_path / "proj", ["nucleus"])
    project.add_images([images])
    _install_model(demo_model_dir(), project.root / "models")  # a judged model: it proposes

    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), device="cpu")
    qtbot.addWidget(w)
    w.show()
    assert w.open_project(project.root)
    qtbot.waitUntil(lambda: w.current is not None, timeout=60_000)
    first = w.current.image_id
    qtbot.waitUntil(lambda: w.loop.active_checkpoint is not None, timeout=120_000)
    qtbot.waitUntil(lambda: w.current.proposal is not None and w.canvas.proposal is not None, timeout=120_000)
    assert w.current.image_id == first and w.canvas.proposal is not None
    assert not messages, messages
    w.close()


def test_read_ahead_copies_make_room_for_the_image_read_and_go_with_their_project(qtbot, tmp_path, monkeypatch):
    """The cache's budget counts the image being read: a large image is never held beside old copies
    (a 10,000 px RGB image kept beside a 20,000 px one took ``segdesk bench large`` over 3 GB)."""
    from segdesk.qt import image_loader
    from segdesk.qt.image_loader import ImageLoader

    project = disc_project(tmp_path, ["lesion"], n_images=3)
    write_disc_image(tmp_path / "images" / "large.png", size=(120, 160))
    project.add_images([tmp_path / "images" / "large.png"])
    small = [e for e in project.images if e.shape == (48, 64)]
    large = next(e for e in project.images if e.shape == (120, 160))
    loader = ImageLoader()

    def read(entry):
        return loader._read(project, entry.id, project.source_path(entry), entry.frame, entry.shape)

    one = read(small[0]).nbytes
    monkeypatch.setattr(image_loader, "CACHE_BYTES", int(2.5 * one))  # room for two small images
    read(small[0])
    read(small[1])
    assert [k[1] for k in loader._cache] == [small[0].id, small[1].id]
    read(small[2])  # the oldest goes
    assert [k[1] for k in loader._cache] == [small[1].id, small[2].id]
    assert read(large).nbytes > image_loader.CACHE_BYTES
    assert not loader._cache  # nothing else kept beside an image over the budget
    read(small[0])
    assert len(loader._cache) == 1
    loader.forget()  # another project was opened
    assert not loader._cache
    loader.shutdown()


def test_opening_another_project_drops_the_read_ahead_copies(qtbot, window, tmp_path):
    w = window
    loader = w.session._loader
    qtbot.waitUntil(lambda: any(k[0] == str(w.project.root) for k in loader._cache), timeout=20_000)
    (tmp_path / "other").mkdir()
    other = disc_project(tmp_path / "other", ["cell"], n_images=1)
    with qtbot.waitSignal(w.session.image_shown, timeout=20_000):
        assert w.open_project(other.root)
    assert all(k[0] == str(other.root) for k in loader._cache)
