"""The annotation desk driven like a user: real main window, mouse and key events, files on disk."""

from __future__ import annotations

import errno
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QPointF, QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from segdesk.core import storage
from segdesk.core.label_document import LabelDocument
from segdesk.core.project import STATUS_ACCEPTED, STATUS_IN_PROGRESS, Project
from segdesk.qt.main_window import MainWindow
from tests.conftest import disc_project, show_window, write_disc_image


@pytest.fixture
def messages(monkeypatch):
    """Record message boxes instead of blocking on them."""
    shown: list[tuple[str, str]] = []

    def record(kind, answer=None):
        def box(_parent, title, text, *args, **kwargs):
            shown.append((title, text))
            return answer
        return box

    monkeypatch.setattr(QMessageBox, "warning", record("warning"))
    monkeypatch.setattr(QMessageBox, "information", record("information"))
    monkeypatch.setattr(QMessageBox, "question", record("question", QMessageBox.StandardButton.Discard))
    return shown


@pytest.fixture
def project(tmp_path) -> Project:
    return disc_project(tmp_path, ["lesion", "organ"])


def make_window(qtbot, tmp_path, root: Path) -> MainWindow:
    w = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    show_window(qtbot, w)  # key presses reach only the active window
    assert w.open_project(root)
    qtbot.waitUntil(lambda: w.current is not None, timeout=20_000)  # the first image is read off the GUI thread
    w.canvas.set_zoom(4.0)
    return w


def show(qtbot, w: MainWindow, image_id: str) -> None:
    """Switch images as the list does, and wait until the image (read on another thread) is shown."""
    with qtbot.waitSignal(w.session.image_shown, timeout=20_000):
        assert w.show_image(image_id)
    assert w.current.image_id == image_id


def view_pos(w: MainWindow, x: float, y: float):
    """Viewport position of the centre of image pixel (x, y)."""
    w.canvas.centerOn(QPointF(x + 0.5, y + 0.5))
    return w.canvas.mapFromScene(QPointF(x + 0.5, y + 0.5))


def drag(w: MainWindow, points: list[tuple[int, int]], button=Qt.MouseButton.LeftButton) -> None:
    vp = w.canvas.viewport()
    w.canvas.centerOn(QPointF(points[0][0] + 0.5, points[0][1] + 0.5))
    pos = [w.canvas.mapFromScene(QPointF(x + 0.5, y + 0.5)) for x, y in points]
    QTest.mousePress(vp, button, Qt.KeyboardModifier.NoModifier, pos[0])
    for p in pos[1:]:
        QTest.mouseMove(vp, p)
    QTest.mouseRelease(vp, button, Qt.KeyboardModifier.NoModifier, pos[-1])


def choose_class(w: MainWindow, value: int) -> None:
    """Click the class in the tools panel list (row 0 = background = value 1)."""
    lst = w.tools.class_list
    rect = lst.visualItemRect(lst.item(value - 1))
    QTest.mouseClick(lst.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, rect.center())
    assert w.controller.value == value


def on_disk(w: MainWindow, image_id: str) -> np.ndarray:
    return cv2.imread(str(w.project.label_path(image_id)), cv2.IMREAD_UNCHANGED)


def test_paint_two_classes_undo_redo_accept_reopen(qtbot, tmp_path, project, messages):
    w = make_window(qtbot, tmp_path, project.root)
    first = w.current.image_id
    w.controller.set_radius(3)
    expected = LabelDocument(np.zeros((48, 64), np.uint8))

    choose_class(w, 2)
    stroke1 = [(10, 10), (20, 12), (30, 14)]
    drag(w, stroke1)
    expected.begin_stroke(2, 3)
    for p in stroke1:
        expected.stroke_to(*p)
    expected.end_stroke()

    choose_class(w, 3)
    stroke2 = [(40, 30), (50, 40)]
    drag(w, stroke2)
    assert np.count_nonzero(w.current.doc.label == 3) > 20

    QTest.keyClick(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo stroke 2 only
    assert np.array_equal(w.current.doc.label, expected.label)
    QTest.keyClick(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    expected.begin_stroke(3, 3)
    for p in stroke2:
        expected.stroke_to(*p)
    expected.end_stroke()
    assert np.array_equal(w.current.doc.label, expected.label)

    # every finished stroke reaches the disk by itself (within a second on an idle machine), without
    # waiting for a switch
    qtbot.waitUntil(lambda: w.project.label_path(first).exists()
                    and np.array_equal(on_disk(w, first), expected.label), timeout=20_000)
    qtbot.waitUntil(lambda: w.project.image(first).status == STATUS_IN_PROGRESS, timeout=20_000)

    # the overlay shows the class colour where painted
    colour = w.canvas.overlay.pixel_colour(20, 12)
    assert (colour.red(), colour.green(), colour.blue()) == w.project.classes[0].rgb

    # accept: moves on to the next image at once; "accepted" once the writer has it on disk
    with qtbot.waitSignals([w.session.image_shown, w.session.image_accepted], timeout=20_000):
        QTest.keyClick(w, Qt.Key.Key_Return)
    assert w.project.image(first).status == STATUS_ACCEPTED
    assert w.current.image_id != first
    second = w.current.image_id
    choose_class(w, 2)
    drag(w, [(5, 5), (6, 6)])
    w.close()
    assert not messages

    accepted = expected.label.copy()
    accepted[accepted == 0] = 1
    assert np.array_equal(on_disk(w, first), accepted)

    reopened = Project.open(project.root)
    assert reopened.image(first).status == STATUS_ACCEPTED
    assert reopened.image(first).seconds_spent > 0
    assert np.array_equal(reopened.read_label(first), accepted)
    assert np.count_nonzero(reopened.read_label(second) == 2) >= 4

    w2 = make_window(qtbot, tmp_path, project.root)
    show(qtbot, w2, first)
    assert np.array_equal(w2.current.doc.label, accepted)
    # the stored label is shown (coloured on the reader thread), and it shows the document's edits
    y, x = (int(v) for v in np.argwhere(accepted == 2)[0])
    colour = w2.canvas.overlay.pixel_colour(x, y)
    assert (colour.red(), colour.green(), colour.blue()) == w2.project.classes[0].rgb
    y, x = (int(v) for v in np.argwhere(accepted == 1)[0])
    choose_class(w2, 3)
    drag(w2, [(x, y), (x, y)])
    assert w2.current.doc.label[y, x] == 3
    colour = w2.canvas.overlay.pixel_colour(x, y)
    assert (colour.red(), colour.green(), colour.blue()) == w2.project.classes[1].rgb
    w2.close()


def test_fill_and_polygon_tools(qtbot, tmp_path, project, messages):
    w = make_window(qtbot, tmp_path, project.root)
    choose_class(w, 2)
    QTest.keyClick(w, Qt.Key.Key_P)
    vp = w.canvas.viewport()
    for x, y in [(5, 5), (25, 5), (25, 25)]:
        QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, view_pos(w, x, y))
    QTest.mouseClick(vp, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, view_pos(w, 25, 25))
    label = w.current.doc.label
    assert label[10, 20] == 2 and label[20, 6] == 0  # inside and outside the triangle

    QTest.keyClick(w, Qt.Key.Key_G)
    choose_class(w, 1)
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, view_pos(w, 50, 40))
    assert label[40, 50] == 1 and label[10, 20] == 2  # fill stopped at the triangle
    assert np.count_nonzero(label == 0) == 0 or np.count_nonzero(label == 1) > 1000
    QTest.keyClick(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert label[40, 50] == 0
    w.close()


def test_full_disk_keeps_edits_and_saves_when_space_returns(qtbot, tmp_path, project, messages, monkeypatch):
    w = make_window(qtbot, tmp_path, project.root)
    image_id = w.current.image_id
    real_write = storage._write_call

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "_write_call", full_disk)
    choose_class(w, 2)
    drag(w, [(10, 10), (30, 10)])
    qtbot.waitUntil(lambda: any("No space left" in text for _t, text in messages), timeout=20_000)
    assert "unsaved" in w.windowTitle()
    painted = w.current.doc.label.copy()
    show(qtbot, w, w.project.images[1].id)  # switching away keeps the unsaved edits in memory
    w.saver.flush()  # the switch waited a frame at most: let the refused write finish
    assert not w.project.label_path(image_id).exists()
    assert not list(w.project.root.glob("labels/.segdesk-tmp-*"))  # no half-written file

    monkeypatch.setattr(storage, "_write_call", real_write)
    w.save_now()
    qtbot.waitUntil(lambda: w.project.label_path(image_id).exists(), timeout=20_000)
    assert np.array_equal(on_disk(w, image_id), painted)
    qtbot.waitUntil(lambda: "unsaved" not in w.windowTitle(), timeout=20_000)
    w.close()


def test_project_folder_deleted_under_the_app(qtbot, tmp_path, project, messages):
    import shutil

    w = make_window(qtbot, tmp_path, project.root)
    image_id = w.current.image_id
    shutil.rmtree(project.root)
    choose_class(w, 2)
    drag(w, [(10, 10), (12, 12)])
    qtbot.waitUntil(lambda: len(messages) == 1, timeout=20_000)
    assert "Could not save" in messages[0][1]
    (project.root / "labels").mkdir(parents=True)  # the user puts the folder back
    w.save_now()
    qtbot.waitUntil(lambda: w.project.label_path(image_id).exists(), timeout=20_000)
    w.close()


def test_bad_files_give_messages_and_lose_nothing(qtbot, tmp_path, project, messages):
    ids = [e.id for e in project.images]
    wrong = np.ones((10, 10), np.uint8)
    storage.write_label(project.label_path(ids[1]), wrong)
    Path(project.source_path(project.image(ids[2]))).write_bytes(b"\x89PNG\r\n\x1a\n broken")

    w = make_window(qtbot, tmp_path, project.root)
    show(qtbot, w, ids[1])
    assert "10x10" in messages[-1][1]
    aside = project.label_path(ids[1]).with_name(project.label_path(ids[1]).name + ".unreadable")
    assert np.array_equal(cv2.imread(str(aside), cv2.IMREAD_UNCHANGED), wrong)  # kept, not overwritten
    assert w.current.doc.is_empty

    with qtbot.waitSignal(w.session.image_failed, timeout=20_000):
        assert w.show_image(ids[2])
    assert "Cannot open image" == messages[-1][0]
    assert w.current.image_id == ids[1]  # the image before stays on screen
    show(qtbot, w, ids[0])  # the window stays usable
    w.close()


def test_sixteen_bit_image_gets_a_display_window(qtbot, tmp_path, messages):
    img = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 20).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "ct.png"), img)
    p = Project.create(tmp_path / "p16", ["bone"])
    p.add_images([tmp_path / "ct.png"])
    w = make_window(qtbot, tmp_path, p.root)
    assert w.tools.window_box.isVisibleTo(w.tools)
    low, high = w.current.window
    assert high > 255  # windowed on the real 16-bit values, not squashed to 8 bits
    w.tools.window_low.setValue(1000)
    assert w.current.window[0] == 1000
    assert w.current.image.pixels.dtype == np.uint16  # display only; stored values untouched
    w.close()


def test_adding_a_folder_shows_progress_and_can_stop(qtbot, tmp_path, project, messages, monkeypatch):
    from segdesk.core.project import Project as P

    folder = tmp_path / "more"
    folder.mkdir()
    for i in range(5):
        write_disc_image(folder / f"more{i}.png", seed=100 + i)
    w = make_window(qtbot, tmp_path, project.root)
    calls = []
    real = P.add_images

    def stop_after_two(self, paths, progress=None, save=True):
        def spy(done, total):
            calls.append((done, total))
            return progress(done, total) and done < 2
        return real(self, paths, progress=spy, save=save)

    monkeypatch.setattr(P, "add_images", stop_after_two)
    with qtbot.waitSignal(w.adder.finished, timeout=20_000):  # read off the GUI thread
        w.add_images([str(folder)])
    assert calls[0] == (0, 5) and len(calls) == 3
    assert len(w.project.images) == 3 + 2  # the two added before stopping are kept
    assert "then stopped" in w.statusBar().currentMessage()
    assert w.saver.flush()  # project.json is written off the GUI thread
    assert len(Project.open(project.root).images) == 5
    w.close()
