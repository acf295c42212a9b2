"""The installed package finds its bundled files (resources/ installed as segdesk.resources), and every
icon the window uses loads at the size asked for."""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, QSize, Qt
from PySide6.QtWidgets import QToolBar

from segdesk.bundled import resource_path
from segdesk.core.errors import SegdeskError
from segdesk.qt.actions import ICONS, SHORTCUTS, icon
from segdesk.qt.main_window import MainWindow

REPO = Path(__file__).resolve().parents[1]


def test_demo_project_and_bundled_model_are_found():
    assert (resource_path("demo", "project") / "project.json").is_file()
    assert list((resource_path("demo", "project") / "images").glob("*.png"))
    model = resource_path("models", "nuclei")
    assert (model / "current.json").is_file() and list(model.glob("*.safetensors"))


def test_resources_come_from_the_installed_package():
    import segdesk.resources

    assert resource_path() == Path(segdesk.resources.__path__[0])


def test_a_missing_resource_is_a_clear_error():
    with pytest.raises(SegdeskError, match="resources/icons/no-such.svg"):
        resource_path("icons", "no-such.svg")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_pyproject_lists_every_segdesk_package():
    """Packages are listed by hand (auto-discovery does not mix with mapping resources/), so a new
    subpackage left out of the list would be missing from the wheel."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "segdesk").rglob("__init__.py")}
    assert on_disk | {"segdesk.resources"} <= listed


@pytest.mark.parametrize("name", [*ICONS, "segdesk"])
def test_every_icon_loads_at_the_size_asked_for(qapp, name):
    assert name == "segdesk" or name in SHORTCUTS
    loaded = icon(name)
    assert not loaded.isNull()
    for size in (16, 24, 48):
        image = loaded.pixmap(QSize(size, size)).toImage()
        assert image.size() == QSize(size, size)
        alphas = {image.pixelColor(x, y).alpha() for x in range(size) for y in range(size)}
        assert max(alphas) > 200, "the icon draws nothing"


def test_desktop_entry_names_the_command_and_an_existing_icon():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # keys are case-sensitive
    entry.read(resource_path("segdesk.desktop"), encoding="utf-8")
    group = entry["Desktop Entry"]
    assert group["Type"] == "Application" and group["Exec"] == "segdesk"
    assert group["Categories"].endswith(";") and "MedicalSoftware" in group["Categories"]
    assert resource_path("icons", f"{group['Icon']}.png").is_file()
    assert resource_path("icons", f"{group['Icon']}.svg").is_file()


def test_the_toolbar_shows_each_action_with_its_icon_and_text(qtbot, tmp_path):
    window = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window, timeout=20_000)
    bar = window.findChild(QToolBar, "main_toolbar")
    assert bar.toolButtonStyle() == Qt.ToolButtonStyle.ToolButtonTextBesideIcon
    shown = [a for a in bar.actions() if not a.isSeparator()]
    assert {"segment", "accept", "undo", "next_image"} <= {a.objectName() for a in shown}
    size = bar.iconSize()
    for action in shown:
        assert action.objectName() in ICONS
        assert not action.icon().isNull()
        assert action.icon().pixmap(size).size() == size
        button = bar.widgetForAction(action)
        assert button.isVisible() and button.text() and "…" not in button.text()
        keys = SHORTCUTS[action.objectName()][1]
        assert keys[0] in action.toolTip()
