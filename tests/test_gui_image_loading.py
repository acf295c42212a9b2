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
