"""The main window: composes the panels, the menus and the project lifecycle (open, new, close).

The window owns the open project (DESIGN.md "Threads"). The labelling of one image after another
lives in SessionController, saving in SaveKeeper, proposals and training in LoopController; no torch
call is made on this thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QActionGroup, QCloseEvent
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMessageBox, QProgressDialog

from segdesk.core import imageio
from segdesk.core.errors import SegdeskError
from segdesk.core.labelling_session import OpenImage
from segdesk.core.project import Project
from segdesk.qt import project_dialogs as dialogs
from segdesk.qt.actions import add_menus, new_action
from segdesk.qt.canvas import Canvas
from segdesk.qt.click_session import ClickSession
from segdesk.qt.image_adder import ImageAdder
from segdesk.qt.image_list import ImageList
from segdesk.qt.labelling_session import SessionController
from segdesk.qt.loop_controller import LoopController
from segdesk.qt.models_panel import ModelsPanel
from segdesk.qt.project_guard import ProjectGuard
from segdesk.qt.save_keeper import SaveKeeper
from segdesk.qt.status_bar import StatusFields
from segdesk.qt.tool_controller import Tool, ToolController
from segdesk.qt.tools_panel import ToolsPanel
from segdesk.qt.windowing import WindowingController
from segdesk.qt.training_panel import TrainingPanel

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_MS = 5000


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, train_config=None, device: str | None = None):
        super().__init__()
        self.settings = settings or QSettings("segdesk", "segdesk")
        self.project: Project | None = None
        self.loop: LoopController | None = None
        self._train_config = train_config
        self._device = device

        self.canvas = Canvas(self)
        self.setCentralWidget(self.canvas)
        self.controller = ToolController(self.canvas, self)
        self.saver = SaveKeeper(self)
        self._make_actions()
        self.image_list = ImageList()
        self.image_list.image_chosen.connect(self.show_image)
        self.tools = ToolsPanel(self.controller, self._tool_actions, self.actions_by_name["outline"])
        self.tools.opacity_changed.connect(self.canvas.set_overlay_opacity)
        self.windowing = WindowingController(self)
        self.tools.bind_windowing(self.windowing)
        self.canvas.window_drag.connect(self.windowing.drag)
        self.windowing.window_chosen.connect(lambda window: self.session.set_window(window))
        self.windowing.described.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.training_panel = TrainingPanel()
        self.models_panel = ModelsPanel()
        self._dock("Images", self.image_list, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Tools", self.tools, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Training", self.training_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Model versions", self.models_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        add_menus(self, self.actions_by_name)
        self.status = StatusFields(self.statusBar())
        self.session = SessionController(self.canvas, self.controller, self.saver, self.image_list, self.windowing,
                                         self.tools, self.status, self.actions_by_name, self)
        self.session.message.connect(self.statusBar().showMessage)
        self.session.error.connect(self._error)
        self.clicks = ClickSession(self.canvas, self.controller, self.session, self)  # the Click tool
        self.clicks.message.connect(self.statusBar().showMessage)
        self.controller.edited.connect(self.saver.edited)
        self.saver.status_text.connect(self.status.save.setText)
        self.saver.first_failure.connect(lambda m: self._error(
            "Not saved", f"{m}\nYour edits are kept in memory and saving is retried every few seconds; "
                         "nothing is lost while segdesk stays open."))
        self.saver.unsaved_changed.connect(lambda _: self._update_title())
        self.saver.label_stored.connect(self._on_label_stored)
        self.adder = ImageAdder(self)  # new images are read and hashed off this thread
        self.adder.progress.connect(self._on_add_progress)
        self.adder.finished.connect(self._on_images_added)
        self.adder.failed.connect(self._on_add_failed)
        self._add_dialog: QProgressDialog | None = None
        self.guard = ProjectGuard(self)  # the project lock: one window (or CLI writer) per project
        self.guard.notice.connect(lambda m: self.statusBar().showMessage(m, 15000))
        self.canvas.hovered.connect(self.session.show_position)
        self.canvas.zoom_changed.connect(self.status.show_zoom)
        self.resize(1500, 950)
        self._update_title()

    # ----- construction

    def _dock(self, title: str, widget, area) -> None:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(area, dock)

    def _make_actions(self) -> None:
        a = {}
        c = self.controller
        for name, slot in (
            ("new_project", self.ask_new_project), ("open_project", self.ask_open_project),
            ("add_images", self.ask_add_images), ("add_folder", self.ask_add_folder),
            ("save", self.save_now), ("quit", self.close), ("undo", c.undo), ("redo", c.redo),
            ("brush_bigger", c.bigger), ("brush_smaller", c.smaller), ("cancel_polygon", c.cancel_polygon),
            ("next_image", lambda: self.step_image(+1)), ("previous_image", lambda: self.step_image(-1)),
            ("accept", self.accept_current), ("fit", self.canvas.fit),
            ("zoom_actual", lambda: self.canvas.set_zoom(1.0)), ("segment", self.segment),
            ("segment_anyway", lambda: self.segment(anyway=True)), ("remove_click", lambda: self.clicks.remove_last()),
        ):
            a[name] = new_action(self, name, slot)
        a["outline"] = new_action(self, "outline", self.canvas.set_outline, checkable=True)
        a["toggle_labels"] = new_action(self, "toggle_labels", self.canvas.show_labels, checkable=True)
        a["toggle_labels"].setChecked(True)
        a["auto_propose"] = new_action(self, "auto_propose", None, checkable=True)
        a["auto_propose"].setChecked(True)
        group = QActionGroup(self)
        self._tool_actions = []
        for tool in Tool:
            action = new_action(self, tool.value, lambda on, t=tool: on and c.set_tool(t), checkable=True)
            action.setChecked(tool == c.tool)
            group.addAction(action)
            a[tool.value] = action
            self._tool_actions.append(action)
        c.tool_changed.connect(lambda name: a[name].setChecked(True))
        self.actions_by_name = a
        for action in a.values():
            self.addAction(action)  # shortcuts work wherever the focus is

    # ----- messages

    def _error(self, title: str, message: str) -> None:
        log.warning("%s: %s", title, message)
        self.statusBar().showMessage(message, 15000)
        QMessageBox.warning(self, title, message)

    def _update_title(self) -> None:
        name = self.project.name if self.project else "no project"
        unsaved = " (unsaved changes)" if self.saver.error else ""
        self.setWindowTitle(f"segdesk — {name}{unsaved}")

    # ----- project

    def ask_new_project(self) -> None:
        answer = dialogs.ask_new_project(self)
        if answer is not None:
            self.new_project(*answer)

    def new_project(self, folder: str | Path, classes: list[str]) -> bool:
        try:
            project = Project.create(folder, classes)
        except SegdeskError as exc:
            self._error("Cannot create project", str(exc))
            return False
        return self.set_project(project)

    def ask_open_project(self) -> None:
        folder = dialogs.ask_project_folder(self, str(self.settings.value("last_project", "")))
        if folder:
            self.open_project(folder)

    def open_project(self, folder: str | Path) -> bool:
        try:
            project = Project.open(folder, clean=False)  # cleaned once its lock is held
        except SegdeskError as exc:
            self._error("Cannot open project", str(exc))
            return False
        return self.set_project(project)

    def set_project(self, project: Project) -> bool:
        problem = self.guard.claim(project)
        if problem is not None:  # open in another window or program: the current project stays
            self._error("Cannot open project", problem)
            return False
        self.session.leave()
        self.saver.flush()  # leaving waits a frame at most; the lock goes only once the label is written
        self._stop_loop()
        self.guard.release_previous()  # the previous project is saved and its workers stopped
        self.project = project
        self.saver.set_project(project)
        self.settings.setValue("last_project", str(project.root))
        self.tools.set_classes(project.classes)
        self.controller.set_value(2)
        self.image_list.set_images(project.images)
        self.training_panel.plot.clear()
        self.loop = LoopController(project, self._train_config, self._device, self,
                                   store_setting=self.saver.save_setting)  # written off this thread
        self.training_panel.bind(self.loop)
        self.models_panel.bind(self.loop)
        self.loop.message.connect(lambda m: self.statusBar().showMessage(m, 10000))
        self.loop.error.connect(self._error)
        self.loop.device_named.connect(self.status.show_device)
        self.clicks.bind(self.loop)
        self._update_title()
        self.session.start(project, self.loop)
        return True

    def ask_add_images(self) -> None:
        if files := dialogs.ask_image_files(self):
            self.add_images(files)

    def ask_add_folder(self) -> None:
        if folder := dialogs.ask_image_folder(self):
            self.add_images(folder)

    def add_images(self, paths: list[str]) -> None:
        """Add files and folders: read and hashed on the image adder's thread (a 20,000 px image
        takes seconds), with a progress dialog whose Stop keeps what was added so far; the list
        updates when it is done (``images_added``)."""
        if self.project is None:
            self._error("No project", "Create or open a project first (File > New project).")
            return
        if self.adder.running:
            self.statusBar().showMessage("Images are still being added; add more when they are in.", 10000)
            return
        dialog = QProgressDialog("Adding images…", "Stop", 0, 1, self)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.setMinimumDuration(300)  # a few files add without a dialog flashing up
        dialog.canceled.connect(self.adder.cancel)
        self._add_dialog = dialog
        self.adder.start(self.project, paths)

    def _on_add_progress(self, done: int, total: int) -> None:
        if self._add_dialog is not None:
            self._add_dialog.setMaximum(max(1, total))
            self._add_dialog.setValue(done)

    def _close_add_dialog(self) -> None:
        if self._add_dialog is not None:
            self._add_dialog.canceled.disconnect(self.adder.cancel)  # closing it is no Stop
            self._add_dialog.close()
            self._add_dialog.deleteLater()
            self._add_dialog = None

    def _on_add_failed(self, project: Project, message: str) -> None:
        self._close_add_dialog()
        if project is self.project:
            self._error("Cannot add images", message)

    def _on_images_added(self, project: Project, report) -> None:
        self._close_add_dialog()
        if project is not self.project:  # another project was opened meanwhile: they were for that one
            log.info("%d image(s) added to a project no longer open were dropped", len(report.added))
            return
        self.project.add_entries(report.added)
        self.saver.images_added(report.added)  # the project writer stores them, off this thread
        self.image_list.set_images(self.project.images)
        if self.current is not None:
            self.image_list.select(self.current.image_id)
        message = f"Added {len(report.added)} image(s)" + (", then stopped." if report.cancelled else ".")
        empty = ""
        if report.empty_folders:
            folders = "\n".join(report.empty_folders[:20])
            empty = (f"No image files in:\n{folders}\n\nsegdesk reads {imageio.FORMATS_TEXT} (a folder's "
                     "subfolders are searched too).")
        if report.skipped:
            reasons = "\n".join(f"{Path(p).name}: {r}" for p, r in report.skipped[:20])
            more = f"\n… and {len(report.skipped) - 20} more" if len(report.skipped) > 20 else ""
            QMessageBox.information(self, "Some files were skipped",
                                    f"{message}\n\nSkipped:\n{reasons}{more}" + (f"\n\n{empty}" if empty else ""))
        elif empty:
            QMessageBox.information(self, "No images found", f"{message}\n\n{empty}" if report.added else empty)
        self.statusBar().showMessage(message, 10000)
        if self.current is None and report.added:
            self.show_image(report.added[0].id)

    # ----- the labelling session (tests, the benchmark and the soak drive the window through these)

    @property
    def current(self) -> OpenImage | None:
        return self.session.current

    def show_image(self, image_id: str) -> bool:
        """Ask for an image: it is read off this thread and shown when it arrives
        (``session.image_shown``); False when no project is open."""
        return self.session.show(image_id)

    def step_image(self, step: int) -> None:
        self.session.step(step)

    def segment(self, anyway: bool = False) -> None:
        self.session.segment(anyway)

    def accept_current(self) -> None:
        self.clicks.clear()  # the clicks' changes are in the label; their markers go
        self.session.accept()

    # ----- saving

    def save_now(self) -> None:
        self.saver.save_all()
        self.saver.flush()

    def _on_label_stored(self, image_id: str) -> None:
        self.image_list.set_status(self.project.image(image_id))
        if self.loop is not None:
            self.loop.labels_saved()

    # ----- close

    def _stop_loop(self) -> None:
        if self.loop is not None:
            if not self.loop.shutdown(SHUTDOWN_TIMEOUT_MS):
                log.error("a worker did not stop in time")
            self.loop.deleteLater()
            self.loop = None

    def closeEvent(self, event: QCloseEvent) -> None:
        self.session.leave()
        self.saver.save_all()
        self.saver.flush()
        still = self.saver.unsaved_ids()
        if still:
            answer = QMessageBox.question(
                self, "Unsaved labels",
                f"{len(still)} label(s) could not be saved ({self.saver.error}).\n"
                "Close anyway and lose those edits?",
                QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
                QMessageBox.StandardButton.Cancel,
            )
            if answer != QMessageBox.StandardButton.Discard:
                event.ignore()
                self.show_image(still[0])
                return
        self._stop_loop()
        self.adder.cancel()  # a file being read finishes on its own; its report is dropped
        self.saver.shutdown()
        self.session.shutdown()
        self.guard.release()
        event.accept()
