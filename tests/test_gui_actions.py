"""Window shortcuts come from the action table in qt/actions.py, Escape included, and the menus
and the toolbar from its layout tables."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QSettings, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from segdesk.core.project import Project
from segdesk.qt.actions import MENUS, SHORTCUTS, TOOLBAR
from segdesk.qt.main_window import MainWindow
from tests.conftest import show_window, write_disc_image


def test_escape_drops_the_polygon_being_drawn(qtbot, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _parent, title, text, *a, **k: shown.append((title, text)))
    write_disc_image(tmp_path / "a.png")
    project = Project.create(tmp_path / "proj", ["lesion"])
    project.add_images([tmp_path / "a.png"])
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    show_window(qtbot, w)  # key presses reach only the active window
    assert w.open_project(project.root)
    qtbot.waitUntil(lambda: w.current is not None, timeout=20_000)  # the image is read off the GUI thread
    w.canvas.set_zoom(4.0)
    assert SHORTCUTS["cancel_polygon"][1] == ("Escape",)
    assert w.actions_by_name["cancel_polygon"].shortcut() == QKeySequence("Escape")

    vp = w.canvas.viewport()

    def click(x: float, y: float, button=Qt.MouseButton.LeftButton) -> None:
        w.canvas.centerOn(QPointF(x, y))
        QTest.mouseClick(vp, button, Qt.KeyboardModifier.NoModifier, w.canvas.mapFromScene(QPointF(x + 0.5, y + 0.5)))

    QTest.keyClick(w, Qt.Key.Key_P)
    for x, y in [(5, 5), (25, 5), (25, 25)]:
        click(x, y)
    QTest.keyClick(w, Qt.Key.Key_Escape)
    click(25, 25, Qt.MouseButton.RightButton)  # would close the polygon had Escape not dropped it
    assert not w.current.doc.label.any()
    for x, y in [(5, 5), (25, 5), (25, 25)]:  # without Escape the same clicks paint the triangle
        click(x, y)
    click(25, 25, Qt.MouseButton.RightButton)
    assert w.current.doc.label[10, 20] == 2
    w.close()
    assert not shown, shown


def test_menus_and_toolbar_show_actions_of_the_table():
    placed = [name for names in (*MENUS.values(), TOOLBAR) for name in names if name is not None]
    assert set(placed) <= set(SHORTCUTS)
    in_menus = [name for names in MENUS.values() for name in names if name is not None]
    assert len(in_menus) == len(set(in_menus))  # each action in one menu, once
