"""All window actions from one factory, with every shortcut in one table (labelme's new_action),
and where each action sits in the menus and the toolbar."""

from __future__ import annotations

import logging
from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import QMainWindow, QWidget

from segdesk.bundled import resource_path
from segdesk.core.errors import SegdeskError

log = logging.getLogger(__name__)

# name: (text, shortcuts, tip). The only place shortcuts are defined.
SHORTCUTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "new_project": ("&New project…", ("Ctrl+N",), "Create a project folder"),
    "open_project": ("&Open project…", ("Ctrl+O",), "Open a project folder"),
    "add_images": ("&Add images…", ("Ctrl+I",), "Add image files to the project"),
    "add_folder": ("Add &folder…", ("Ctrl+Shift+I",), "Add every image in a folder"),
    "save": ("&Save", ("Ctrl+S",), "Save the label now (labels also save on every stroke)"),
    "quit": ("&Quit", ("Ctrl+Q",), "Close segdesk"),
    "undo": ("&Undo", ("Ctrl+Z",), "Undo the last stroke"),
    "redo": ("&Redo", ("Ctrl+Shift+Z", "Ctrl+Y"), "Redo"),
    "brush": ("&Brush", ("B",), "Paint the selected class"),
    "eraser": ("&Eraser", ("E",), "Remove label (back to not labelled)"),
    "fill": ("F&ill", ("G",), "Fill the connected region under the cursor"),
    "polygon": ("&Polygon", ("P",), "Click corners; double-click or right-click closes, Esc cancels"),
    "click": ("&Click", ("C",), "Click to correct the proposal: left click = this is the selected class, "
                               "right click or Shift+click = this is not"),
    "remove_click": ("Remove last click", ("Backspace",), "Remove the last click and its change"),
    "cancel_polygon": ("Cancel polygon", ("Escape",), "Drop the polygon being drawn"),
    "brush_bigger": ("Bigger brush", ("]",), "Brush size up"),
    "brush_smaller": ("Smaller brush", ("[",), "Brush size down"),
    "next_image": ("&Next image", ("PgDown", "Alt+Right"), "Go to the next image"),
    "previous_image": ("&Previous image", ("PgUp", "Alt+Left"), "Go to the previous image"),
    "accept": ("&Accept", ("Return", "Enter"), "This mask is right: accept it and go to the next image"),
    "segment": ("&Segment", ("S",), "Show the model's proposal for this image"),
    "segment_anyway": ("Segment an&yway", ("Shift+S",),
                       "Show the proposal of a model still learning (it costs more to correct than drawing)"),
    "auto_propose": ("Propose &automatically", (), "Show the proposal of every image as soon as it opens"),
    "fit": ("&Fit to window", ("F",), "Show the whole image"),
    "zoom_actual": ("&Actual pixels", ("Ctrl+1",), "Zoom to 100%"),
    "outline": ("&Outline only", ("O",), "Show label outlines instead of filled regions"),
    "toggle_labels": ("Show &labels", ("V",), "Show or hide the label overlay"),
}

# Menu titles and toolbar with their actions in order; None is a separator.
MENUS: dict[str, tuple[str | None, ...]] = {
    "&File": ("new_project", "open_project", None, "add_images", "add_folder", None, "save", None, "quit"),
    "&Edit": ("undo", "redo", None, "segment", "segment_anyway", "auto_propose", "accept"),
    "&View": ("fit", "zoom_actual", None, "toggle_labels", "outline", None, "next_image", "previous_image"),
    "&Tools": ("brush", "eraser", "fill", "polygon", "click", None, "remove_click", None, "brush_bigger",
               "brush_smaller"),
}
TOOLBAR: tuple[str | None, ...] = ("open_project", "add_images", None, "segment", "accept", None, "undo", "redo",
                                   None, "previous_image", "next_image", None, "fit")

# Actions drawn with an icon: resources/icons/<name>.svg. The rest show text only.
ICONS = ("new_project", "open_project", "add_images", "add_folder", "save", "undo", "redo", "brush", "eraser",
         "fill", "polygon", "next_image", "previous_image", "accept", "segment", "fit", "zoom_actual", "outline",
         "toggle_labels")


def icon(name: str) -> QIcon:
    """The bundled icon resources/icons/<name>.svg, drawn sharp at any size by Qt's svg icon engine;
    an empty icon (and a warning) if the install lacks it, so a broken install still runs."""
    try:
        return QIcon(str(resource_path("icons", f"{name}.svg")))
    except SegdeskError as exc:
        log.warning("%s", exc)
        return QIcon()


def shortcut_text(name: str) -> str:
    """The first shortcut of an action as the user reads it (e.g. "Shift+S"), for messages."""
    keys = SHORTCUTS[name][1]
    return QKeySequence(keys[0]).toString(QKeySequence.SequenceFormat.NativeText) if keys else ""


def new_action(
    parent: QWidget,
    name: str,
    slot: Callable | None = None,
    checkable: bool = False,
) -> QAction:
    text, keys, tip = SHORTCUTS[name]
    action = QAction(text, parent)
    action.setObjectName(name)
    if name in ICONS:
        action.setIcon(icon(name))
    action.setShortcuts([QKeySequence(k) for k in keys])
    action.setToolTip(f"{tip} ({', '.join(keys)})" if keys else tip)
    action.setStatusTip(tip)
    action.setCheckable(checkable)
    if slot is not None:
        if checkable:
            action.toggled.connect(slot)
        else:
            action.triggered.connect(lambda _checked=False: slot())
    return action


def add_menus(window: QMainWindow, actions: dict[str, QAction]) -> None:
    """The window's menus (MENUS) and its toolbar (TOOLBAR), made of ``actions`` by name."""
    for title, names in MENUS.items():
        menu = window.menuBar().addMenu(title)
        for name in names:
            menu.addSeparator() if name is None else menu.addAction(actions[name])
    bar = window.addToolBar("Main")
    bar.setObjectName("main_toolbar")
    bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    for name in TOOLBAR:
        bar.addSeparator() if name is None else bar.addAction(actions[name])
