"""Adding images from the window (issue 14): each file is decoded and hashed on the image adder's
thread, never the GUI thread (a 20,000 px image takes seconds); the list shows them when done,
and a file that cannot be read is reported as before."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox

from segdesk.core import imageio, project as project_module
from segdesk.core.project import Project
from segdesk.qt.main_window import MainWindow
from tests.conftest import disc_project, show_window, write_disc_image


@pytest.fixture
def messages(monkeypatch):
    shown: list[tuple[str, str]] = []
    for kind in ("warning", "information", "critical"):
        monkeypatch.setattr(QMessageBox, kind, lambda _p, t, m, *a, **k: shown.append((t, m)))
    return shown


def test_added_images_are_read_off_the_gui_thread(qtbot, tmp_path, monkeypatch, messages):
    project = disc_project(tmp_path, ["lesion"], n_images=1)
    project.settings["auto_train_after"] = 1000
    project.save()
    folder = tmp_path / "more"
    folder.mkdir()
    for i in range(3):
        write_disc_image(folder / f"more{i}.png", seed=10 + i)
    (folder / "broken.png").write_bytes(b"not a png")
    threads: list[str] = []
    for module, name in ((imageio, "read_image"), (project_module, "file_sha256")):
        real = getattr(module, name)

        def spy(*args, _real=real, **kwargs):
            threads.append(threading.current_thread().name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), device="cpu")
    show_window(qtbot, w, active=False)
    assert w.open_project(project.root)
    qtbot.waitUntil(lambda: w.current is not None, timeout=20_000)
    threads.clear()  # the image loader read the first image; only the adding counts from here

    with qtbot.waitSignal(w.adder.finished, timeout=20_000):
        w.add_images([str(folder)])
    assert len(threads) >= 3 + 3  # each file read (the broken one too), each readable one hashed
    assert threading.main_thread().name not in threads
    assert len(w.project.images) == 4 and w.image_list.list.count() == 4
    new = w.project.images[-1]
    assert w.project.image(new.id) is new  # the open project finds them by id
    assert w.statusBar().currentMessage() == "Added 3 image(s)."
    assert messages and messages[-1][0] == "Some files were skipped" and "broken.png" in messages[-1][1]
    assert w.saver.flush()  # project.json is written off the GUI thread too
    assert len(Project.open(project.root, clean=False).images) == 4

    with qtbot.waitSignal(w.adder.finished, timeout=20_000):  # the same files again: all duplicates
        w.add_images([str(folder / "more0.png")])
    assert len(w.project.images) == 4 and "already in the project" in messages[-1][1]
    w.close()


def test_adding_a_folder_without_images_says_so(qtbot, tmp_path, messages):
    """Not a silent "Added 0 image(s).": the folder is named, with what segdesk reads."""
    project = disc_project(tmp_path, ["lesion"], n_images=1)
    folder = tmp_path / "exports"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "report.pdf").write_bytes(b"%PDF-1.4")
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), device="cpu")
    show_window(qtbot, w, active=False)
    assert w.open_project(project.root)
    with qtbot.waitSignal(w.adder.finished, timeout=20_000):
        w.add_images([str(folder)])
    assert len(messages) == 1
    title, text = messages[0]
    assert title == "No images found" and str(folder) in text and imageio.FORMATS_TEXT in text
    assert len(w.project.images) == 1
    w.close()


def test_a_folder_without_images_is_named_beside_files_that_were_skipped(qtbot, tmp_path, messages):
    """Adding two folders, one holding an unreadable image and one holding no image, names both."""
    project = disc_project(tmp_path, ["lesion"], n_images=1)
    broken, empty = tmp_path / "broken", tmp_path / "notes"
    broken.mkdir()
    empty.mkdir()
    (broken / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (empty / "readme.txt").write_text("no images here")
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), device="cpu")
    show_window(qtbot, w, active=False)
    assert w.open_project(project.root)
    with qtbot.waitSignal(w.adder.finished, timeout=20_000):
        w.add_images([str(broken), str(empty)])
    assert len(messages) == 1
    title, text = messages[0]
    assert title == "Some files were skipped" and "scan.png" in text
    assert f"No image files in:\n{empty}" in text
    assert len(w.project.images) == 1
    w.close()


def test_adding_images_that_fail_says_why(qtbot, tmp_path, monkeypatch, messages):
    from segdesk.core.errors import ProjectError

    project = disc_project(tmp_path, ["lesion"], n_images=1)
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), device="cpu")
    show_window(qtbot, w, active=False)
    assert w.open_project(project.root)

    def refuse(self, paths, progress=None, save=True):
        raise ProjectError("The project is full.")

    monkeypatch.setattr(Project, "add_images", refuse)
    with qtbot.waitSignal(w.adder.failed, timeout=20_000):
        w.add_images([str(tmp_path / "images")])
    assert ("Cannot add images", "The project is full.") in messages
    assert len(w.project.images) == 1
    w.close()
