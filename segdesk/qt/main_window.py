"""The main window: image list, canvas, tools panel; opening, switching, autosaving and accepting.

The window owns the open project and the label document (DESIGN.md "Threads"). Label files are
written by the Autosaver thread; project.json is written here, it is small.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
)

from segdesk.core import imageio
from segdesk.core.errors import LabelError, SegdeskError
from segdesk.core.label_document import LabelDocument
from segdesk.core.project import STATUS_ACCEPTED, Project
from segdesk.qt.actions import new_action
from segdesk.qt.autosave import Autosaver
from segdesk.qt.canvas import Canvas
from segdesk.qt.image_list import ImageList
from segdesk.qt.open_image import OpenImage
from segdesk.qt.overlay import LabelOverlayItem, colour_table
from segdesk.qt.tool_controller import Tool, ToolController
from segdesk.qt.tools_panel import ToolsPanel

log = logging.getLogger(__name__)

RETRY_MS = 5000
IMAGE_FILTER = "Images (" + " ".join(f"*{s}" for s in sorted(imageio.SUPPORTED_SUFFIXES)) + ");;All files (*)"


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None):
        super().__init__()
        self.settings = settings or QSettings("segdesk", "segdesk")
        self.project: Project | None = None
        self.current: OpenImage | None = None
        self._unsaved: dict[str, LabelDocument] = {}  # documents whose newest version is not on disk
        self._spent: dict[str, float] = {}  # seconds on images not yet accepted
        self._save_error: str | None = None

        self.canvas = Canvas(self)
        self.setCentralWidget(self.canvas)
        self.controller = ToolController(self.canvas, self)
        self.autosaver = Autosaver(self)
        self.autosaver.saved.connect(self._on_saved)
        self.autosaver.failed.connect(self._on_save_failed)
        self._retry = QTimer(self, interval=RETRY_MS)
        self._retry.timeout.connect(self._retry_unsaved)

        self._make_actions()
        self.image_list = ImageList()
        self.image_list.image_chosen.connect(self.show_image)
        self.tools = ToolsPanel(self.controller, self._tool_actions, self.actions_by_name["outline"])
        self.tools.opacity_changed.connect(self._set_opacity)
        self.tools.window_changed.connect(lambda lo, hi: self._set_window((lo, hi)))
        self.tools.window_auto.connect(lambda: self._set_window(None))
        for title, widget, area in (
            ("Images", self.image_list, Qt.DockWidgetArea.LeftDockWidgetArea),
            ("Tools", self.tools, Qt.DockWidgetArea.RightDockWidgetArea),
        ):
            dock = QDockWidget(title, self)
            dock.setObjectName(title)
            dock.setWidget(widget)
            dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
            self.addDockWidget(area, dock)
        self._make_menus()
        self._make_status_bar()
        self.controller.edited.connect(self._on_edited)
        self.canvas.hovered.connect(self._show_position)
        self.canvas.zoom_changed.connect(lambda z: self._zoom_label.setText(f"{z * 100:.0f}%"))
        QShortcut(QKeySequence("Escape"), self, activated=self.controller.cancel_polygon)
        self.resize(1400, 900)
        self._update_title()

    # ----- construction

    def _make_actions(self) -> None:
        a = {}
        c = self.controller
        for name, slot in (
            ("new_project", self.ask_new_project), ("open_project", self.ask_open_project),
            ("add_images", self.ask_add_images), ("add_folder", self.ask_add_folder),
            ("save", self.save_now), ("quit", self.close), ("undo", c.undo), ("redo", c.redo),
            ("brush_bigger", c.bigger), ("brush_smaller", c.smaller),
            ("next_image", lambda: self.step_image(+1)), ("previous_image", lambda: self.step_image(-1)),
            ("accept", self.accept_current), ("fit", self.canvas.fit),
            ("zoom_actual", lambda: self.canvas.set_zoom(1.0)),
        ):
            a[name] = new_action(self, name, slot)
        a["outline"] = new_action(self, "outline", self._set_outline, checkable=True)
        a["toggle_labels"] = new_action(self, "toggle_labels", self._show_labels, checkable=True)
        a["toggle_labels"].setChecked(True)
        self._tool_actions = []
        for tool in Tool:
            action = new_action(self, tool.value, lambda on, t=tool: on and c.set_tool(t), checkable=True)
            action.setChecked(tool == c.tool)
            a[tool.value] = action
            self._tool_actions.append(action)
        c.tool_changed.connect(lambda name: a[name].setChecked(True))
        from PySide6.QtGui import QActionGroup

        group = QActionGroup(self)
        for action in self._tool_actions:
            group.addAction(action)
        self.actions_by_name = a
        for action in a.values():
            self.addAction(action)  # shortcuts work wherever the focus is

    def _make_menus(self) -> None:
        a = self.actions_by_name
        menus = {
            "&File": ["new_project", "open_project", None, "add_images", "add_folder", None, "save", None, "quit"],
            "&Edit": ["undo", "redo", None, "accept"],
            "&View": ["fit", "zoom_actual", None, "toggle_labels", "outline", None, "next_image", "previous_image"],
            "&Tools": ["brush", "eraser", "fill", "polygon", None, "brush_bigger", "brush_smaller"],
        }
        for title, names in menus.items():
            menu = self.menuBar().addMenu(title)
            for name in names:
                menu.addSeparator() if name is None else menu.addAction(a[name])
        bar = self.addToolBar("Main")
        bar.setObjectName("main_toolbar")
        for name in ("open_project", "add_images", None, "undo", "redo", None, "previous_image", "next_image", "accept"):
            bar.addSeparator() if name is None else bar.addAction(a[name])

    def _make_status_bar(self) -> None:
        self._position_label = QLabel()
        self._zoom_label = QLabel()
        self._save_label = QLabel()
        bar = self.statusBar()
        bar.addPermanentWidget(self._position_label)
        bar.addPermanentWidget(self._zoom_label)
        bar.addPermanentWidget(self._save_label)

    # ----- messages

    def _error(self, title: str, message: str) -> None:
        log.warning("%s: %s", title, message)
        self.statusBar().showMessage(message, 15000)
        QMessageBox.warning(self, title, message)

    def _update_title(self) -> None:
        name = self.project.name if self.project else "no project"
        unsaved = " (unsaved changes)" if self._save_error else ""
        self.setWindowTitle(f"segdesk — {name}{unsaved}")

    # ----- project

    def ask_new_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose an empty folder for the new project")
        if not folder:
            return
        names, ok = QInputDialog.getText(self, "Classes", "Classes to label, separated by commas:", text="lesion")
        if ok:
            self.new_project(folder, [n for n in names.split(",") if n.strip()])

    def new_project(self, folder: str | Path, classes: list[str]) -> bool:
        try:
            project = Project.create(folder, classes)
        except SegdeskError as exc:
            self._error("Cannot create project", str(exc))
            return False
        return self.set_project(project)

    def ask_open_project(self) -> None:
        start = self.settings.value("last_project", "")
        folder = QFileDialog.getExistingDirectory(self, "Open a segdesk project folder", str(start))
        if folder:
            self.open_project(folder)

    def open_project(self, folder: str | Path) -> bool:
        try:
            project = Project.open(folder)
        except SegdeskError as exc:
            self._error("Cannot open project", str(exc))
            return False
        return self.set_project(project)

    def set_project(self, project: Project) -> bool:
        if not self.leave_current():
            return False
        self.project = project
        self._unsaved.clear()
        self._spent.clear()
        self.settings.setValue("last_project", str(project.root))
        self.tools.set_classes(project.classes)
        self.controller.set_value(2)
        self.image_list.set_images(project.images)
        self._lut = colour_table([c.rgb for c in project.classes])
        self._update_title()
        first = next((e for e in project.images if e.status != STATUS_ACCEPTED), None)
        first = first or (project.images[0] if project.images else None)
        if first is not None:
            self.show_image(first.id)
        else:
            self.statusBar().showMessage("Add images to the project: File > Add images (Ctrl+I).")
        return True

    def ask_add_images(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add images", "", IMAGE_FILTER)
        if files:
            self.add_images(files)

    def ask_add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add every image in a folder")
        if folder:
            self.add_images([folder])

    def add_images(self, paths: list[str]) -> None:
        if self.project is None:
            self._error("No project", "Create or open a project first (File > New project).")
            return
        self.setCursor(Qt.CursorShape.WaitCursor)
        try:
            report = self.project.add_images(paths)
        except SegdeskError as exc:
            self._error("Cannot add images", str(exc))
            return
        finally:
            self.unsetCursor()
        self.image_list.set_images(self.project.images)
        if self.current is not None:
            self.image_list.select(self.current.image_id)
        message = f"Added {len(report.added)} image(s)."
        if report.skipped:
            reasons = "\n".join(f"{Path(p).name}: {r}" for p, r in report.skipped[:20])
            more = f"\n… and {len(report.skipped) - 20} more" if len(report.skipped) > 20 else ""
            QMessageBox.information(self, "Some files were skipped", f"{message}\n\nSkipped:\n{reasons}{more}")
        self.statusBar().showMessage(message, 10000)
        if self.current is None and report.added:
            self.show_image(report.added[0].id)

    # ----- images

    def show_image(self, image_id: str) -> bool:
        """Switch to an image; the current one is saved first. False when it cannot be shown."""
        if self.project is None:
            return False
        if self.current is not None and self.current.image_id == image_id:
            return True
        if not self.leave_current():
            return False
        entry = self.project.image(image_id)
        try:
            image = self.project.read_image(entry)
        except SegdeskError as exc:
            self.image_list.set_status(entry, error=str(exc))
            self._error("Cannot open image", str(exc))
            return False
        if image.shape2d != entry.shape:
            message = (f"{entry.source} is now {image.width}x{image.height}, but the project recorded "
                       f"{entry.width}x{entry.height}: the file was changed outside segdesk.")
            self.image_list.set_status(entry, error=message)
            self._error("Image changed", message)
            return False
        doc = self._unsaved.pop(image_id, None) or self._load_document(image_id)
        window = imageio.auto_window(image.pixels) if image.bit_depth > 8 else None
        self.current = OpenImage(image_id, image, doc, window)
        if image_id not in self._unsaved:
            self.autosaver.mark_saved(image_id, doc.version)
        self.canvas.set_image(imageio.to_display(image.pixels, window))
        overlay = LabelOverlayItem(doc.label, self._lut)
        overlay.setOpacity(self.tools.opacity_slider.value() / 100.0)
        overlay.set_outline(self.actions_by_name["outline"].isChecked())
        overlay.setVisible(self.actions_by_name["toggle_labels"].isChecked())
        self.canvas.set_overlay(overlay)
        self.controller.set_document(doc)
        self.tools.show_window(window)
        self.image_list.select(image_id)
        self.canvas.fit()
        self._show_save_state()
        return True

    def _load_document(self, image_id: str) -> LabelDocument:
        entry = self.project.image(image_id)
        try:
            label = self.project.read_label(image_id)
        except LabelError as exc:
            moved = self._set_aside(self.project.label_path(image_id))
            self._error("Label not loaded", f"{exc}\nThe file was kept as {moved.name}; a new empty label was started.")
            label = None
        if label is None:
            label = np.zeros(entry.shape, np.uint8)
        return LabelDocument(label)

    @staticmethod
    def _set_aside(path: Path) -> Path:
        """Rename an unusable label so autosave never overwrites it."""
        target = path.with_name(path.name + ".unreadable")
        n = 1
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}.unreadable{n}")
        try:
            path.rename(target)
        except OSError as exc:
            log.warning("could not set aside %s: %s", path, exc)
        return target

    def leave_current(self) -> bool:
        """Save the current image's label (waiting for the writer) before switching away or closing."""
        if self.current is None:
            return True
        self.controller.finish_stroke()
        self.controller.cancel_polygon()
        cur = self.current
        self._submit(cur)
        self.autosaver.flush()
        if self.autosaver.saved_version(cur.image_id) != cur.doc.version:
            self._unsaved[cur.image_id] = cur.doc  # kept in memory; retried until the disk takes it
        self._spent[cur.image_id] = self._spent.get(cur.image_id, 0.0) + cur.seconds_open()
        self.controller.set_document(None)
        self.canvas.set_overlay(None)
        self.canvas.set_image(None)
        self.current = None
        return True

    def step_image(self, step: int) -> None:
        if self.project is None or not self.project.images:
            return
        ids = [e.id for e in self.project.images]
        index = ids.index(self.current.image_id) if self.current else -step
        self.show_image(ids[(index + step) % len(ids)])

    def accept_current(self) -> None:
        """Accept the current mask (unlabelled pixels become background) and go to the next image."""
        if self.project is None or self.current is None:
            return
        self.controller.finish_stroke()
        cur = self.current
        self.autosaver.flush()
        seconds = self._spent.pop(cur.image_id, 0.0) + cur.seconds_open()
        try:
            accepted = self.project.accept(cur.image_id, cur.doc.label, seconds)
        except SegdeskError as exc:
            self._spent[cur.image_id] = seconds
            self._error("Not accepted", f"{exc}\nYour label is kept in memory; try again.")
            return
        cur.opened_at = cur.opened_at + cur.seconds_open()  # time restarts if the user stays here
        cur.doc.set_label(accepted)
        self.autosaver.mark_saved(cur.image_id, cur.doc.version)
        self.canvas.overlay.refresh(None)
        self.image_list.set_status(self.project.image(cur.image_id))
        self.statusBar().showMessage(f"Accepted {Path(self.project.image(cur.image_id).source).name}.", 5000)
        following = self._next_unaccepted(cur.image_id)
        if following is not None:
            self.show_image(following)
        else:
            self.statusBar().showMessage("Every image in the project is accepted.", 10000)

    def _next_unaccepted(self, image_id: str) -> str | None:
        ids = [e.id for e in self.project.images]
        start = ids.index(image_id)
        for i in ids[start + 1:] + ids[:start]:
            if self.project.image(i).status != STATUS_ACCEPTED:
                return i
        return None

    # ----- saving

    def _submit(self, cur: OpenImage) -> None:
        if self.autosaver.saved_version(cur.image_id) != cur.doc.version:
            path = self.project.label_path(cur.image_id)
            self.autosaver.submit(cur.image_id, path, cur.doc.label.copy(), cur.doc.version)

    def _on_edited(self) -> None:
        if self.current is not None:
            self._submit(self.current)
            self._show_save_state("Saving…")

    def save_now(self) -> None:
        if self.current is not None:
            self._submit(self.current)
            self.autosaver.flush()
        self._retry_unsaved()

    def _on_saved(self, image_id: str, version: int, painted: bool, has_unlabelled: bool) -> None:
        doc = self._unsaved.get(image_id)
        if doc is not None and doc.version == version:
            del self._unsaved[image_id]
        try:
            self.project.label_saved(image_id, painted, has_unlabelled)
        except SegdeskError as exc:
            self._on_save_failed(image_id, version, str(exc))
            return
        self.image_list.set_status(self.project.image(image_id))
        if not self._unsaved and self._is_current_saved():
            self._save_error = None
            self._retry.stop()
        self._show_save_state()
        self._update_title()

    def _on_save_failed(self, image_id: str, version: int, message: str) -> None:
        first = self._save_error is None
        self._save_error = message
        self._retry.start()
        self._show_save_state()
        self._update_title()
        if first:
            self._error("Not saved", f"{message}\nYour edits are kept in memory and saving is retried "
                                     "every few seconds; nothing is lost while segdesk stays open.")

    def _retry_unsaved(self) -> None:
        if self.project is None:
            return
        for image_id, doc in list(self._unsaved.items()):
            self.autosaver.submit(image_id, self.project.label_path(image_id), doc.label.copy(), doc.version)
        if self.current is not None:
            self._submit(self.current)

    def _is_current_saved(self) -> bool:
        cur = self.current
        return cur is None or self.autosaver.saved_version(cur.image_id) == cur.doc.version

    def _show_save_state(self, text: str | None = None) -> None:
        if text is None:
            text = f"Not saved: {self._save_error}" if self._save_error else "All changes saved"
        self._save_label.setText(text)

    def has_unsaved(self) -> bool:
        return bool(self._unsaved) or not self._is_current_saved()

    # ----- view

    def _set_opacity(self, opacity: float) -> None:
        if self.canvas.overlay is not None:
            self.canvas.overlay.setOpacity(opacity)

    def _set_outline(self, on: bool) -> None:
        if self.canvas.overlay is not None:
            self.canvas.overlay.set_outline(on)

    def _show_labels(self, on: bool) -> None:
        if self.canvas.overlay is not None:
            self.canvas.overlay.setVisible(on)

    def _set_window(self, window: tuple[float, float] | None) -> None:
        cur = self.current
        if cur is None or cur.window is None:
            return
        cur.window = window or imageio.auto_window(cur.image.pixels)
        self.canvas.update_image(imageio.to_display(cur.image.pixels, cur.window))
        self.tools.show_window(cur.window)

    def _show_position(self, x: float, y: float) -> None:
        cur = self.current
        if cur is None:
            return
        ix, iy = int(np.floor(x)), int(np.floor(y))
        h, w = cur.doc.shape
        if not (0 <= ix < w and 0 <= iy < h):
            self._position_label.setText("")
            return
        value = cur.image.pixels[iy, ix]
        value_text = ", ".join(str(v) for v in np.atleast_1d(value))
        label = int(cur.doc.label[iy, ix])
        names = ["not labelled", "background"] + [c.name for c in self.project.classes]
        self._position_label.setText(f"x {ix}  y {iy}   value {value_text}   label: {names[label]}")

    # ----- close

    def closeEvent(self, event: QCloseEvent) -> None:
        self.leave_current()
        self._retry_unsaved()
        self.autosaver.flush()
        still = [i for i, d in self._unsaved.items() if self.autosaver.saved_version(i) != d.version]
        if still:
            answer = QMessageBox.question(
                self, "Unsaved labels",
                f"{len(still)} label(s) could not be saved ({self._save_error}).\n"
                "Close anyway and lose those edits?",
                QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
                QMessageBox.StandardButton.Cancel,
            )
            if answer != QMessageBox.StandardButton.Discard:
                event.ignore()
                if self.project and still:
                    self.show_image(still[0])
                return
        self.autosaver.shutdown()
        event.accept()
