"""Display windowing in the real window: Shift + right-drag, presets, reset; stored pixels untouched."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox, QPushButton

from segdesk.core.project import Project
from segdesk.qt.main_window import MainWindow
from segdesk.qt.windowing import LEVEL_WIDTHS_PER_PX, WIDTH_DOUBLING_PX
from tests.conftest import show_window
from tests.dicom_factory import ct_file, ct_phantom


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: None)
    ct_file(tmp_path / "scans" / "slice.dcm", ct_phantom(size=96))
    project = Project.create(tmp_path / "proj", ["lesion"])
    assert project.add_images([tmp_path / "scans"]).added
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    show_window(qtbot, w, active=False)
    assert w.open_project(project.root)
    qtbot.waitUntil(lambda: w.current is not None, timeout=20_000)  # the image is read off the GUI thread
    return w


def test_shift_right_drag_windows_the_display_only(window):
    w = window
    stored = w.current.image.pixels.copy()
    shown = w.canvas._image_item.pixmap().toImage().copy()
    assert w.current.window == (-160.0, 240.0)  # the file's own window
    assert w.tools.window_box.isVisibleTo(w.tools)
    vp = w.canvas.viewport()
    start = vp.rect().center()
    QTest.mousePress(vp, Qt.MouseButton.RightButton, Qt.KeyboardModifier.ShiftModifier, start)
    QTest.mouseMove(vp, start + QPoint(60, 20))
    QTest.mouseMove(vp, start + QPoint(100, 50))
    QTest.mouseRelease(vp, Qt.MouseButton.RightButton, Qt.KeyboardModifier.ShiftModifier,
                       start + QPoint(100, 50))
    level, width = (sum(w.current.window) / 2, w.current.window[1] - w.current.window[0])
    assert width == pytest.approx(400 * 2 ** (100 / WIDTH_DOUBLING_PX))  # right: wider
    assert level == pytest.approx(40 + 50 * 400 * LEVEL_WIDTHS_PER_PX)  # down: higher level (darker)
    assert w.tools.window_low.value() == pytest.approx(w.current.window[0], abs=0.1)
    assert w.tools.preset_box.currentText() == "Custom"
    np.testing.assert_array_equal(w.current.image.pixels, stored)  # display only
    assert not w.current.doc.label.any()  # the right button did not erase or paint
    assert w.canvas._image_item.pixmap().toImage() != shown


def test_ct_preset_and_reset(window):
    w = window
    box = w.tools.preset_box
    row = box.findText("CT lung (-600/1500)")
    assert row > 0
    box.setCurrentIndex(row)
    box.activated.emit(row)
    assert w.current.window == (-1350.0, 150.0)
    assert (w.tools.window_low.value(), w.tools.window_high.value()) == (-1350.0, 150.0)
    # the file's second window is also lung: whichever comes first names the choice
    assert box.currentText() in ("CT lung (-600/1500)", "File: window 2 (-600/1500)")
    bone = box.findText("CT bone (400/1800)")
    box.setCurrentIndex(bone)
    box.activated.emit(bone)
    assert w.current.window == (-500.0, 1300.0)
    assert box.currentText() == "CT bone (400/1800)"
    reset = next(b for b in w.tools.window_box.findChildren(QPushButton) if b.text() == "Reset")
    QTest.mouseClick(reset, Qt.MouseButton.LeftButton)
    assert w.current.window == (-160.0, 240.0)
    assert box.currentText().startswith("File: window 1")
