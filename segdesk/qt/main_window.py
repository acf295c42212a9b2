"""The main window: composes the panels and runs the labelling of one image after another.

The window owns the open project and the label document (DESIGN.md "Threads"). Saving lives in
SaveKeeper, proposals and training in LoopController; no torch call is made on this thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QActionGroup, QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMessageBox, QProgressDialog

from segdesk.core import display, encoding, label_files
from segdesk.core.errors import SegdeskError
from segdesk.core.label_document import LabelDocument
from segdesk.core.project import STATUS_ACCEPTED, Project
from segdesk.qt import project_dialogs as dialogs
from segdesk.qt.actions import new_action
from segdesk.qt.canvas import Canvas
from segdesk.qt.image_list import ImageList
from segdesk.qt.loop_controller import LoopController
from segdesk.qt.models_panel import ModelsPanel
from segdesk.qt.open_image import OpenImage
from segdesk.qt.overlay import LEARNING_DASH, LabelOverlayItem, colour_table, learning_proposal_tables, proposal_tables
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
        self.current: OpenImage | None = None
        self.loop: LoopController | None = None
        self._train_config = train_config
        self._device = device
        self._spent: dict[str, float] = {}  # seconds on images not yet accepted

        self.canvas = Canvas(self)
        self.setCentralWidget(self.canvas)
        self.controller = ToolController(self.canvas, self)
        self.saver = SaveKeeper(self)
        self._make_actions()
        self.image_list = ImageList()
        self.image_list.image_chosen.connect(self.show_image)
        self.tools = ToolsPanel(self.controller, self._tool_actions, self.actions_by_name["outline"])
        self.tools.opacity_changed.connect(self.canvas.set_overlay_opacity)
        self.tools.window_changed.connect(lambda lo, hi: self._set_window((lo, hi)))
        self.tools.window_auto.connect(lambda: self._set_window(None))
        self.windowing = WindowingController(self.canvas, self.tools, self)
        self.windowing.window_chosen.connect(self._set_window)
        self.windowing.described.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.training_panel = TrainingPanel()
        self.models_panel = ModelsPanel()
        self._dock("Images", self.image_list, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Tools", self.tools, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Training", self.training_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Model versions", self.models_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._make_menus()
        self.status = StatusFields(self.statusBar())
        self.controller.edited.connect(self.saver.edited)
        self.saver.status_text.connect(self.status.save.setText)
        self.saver.first_failure.connect(lambda m: self._error(
            "Not saved", f"{m}\nYour edits are kept in memory and saving is retried every few seconds; "
                         "nothing is lost while segdesk stays open."))
        self.saver.unsaved_changed.connect(lambda _: self._update_title())
        self.saver.label_stored.connect(self._on_label_stored)
        self.guard = ProjectGuard(self)  # the project lock: one window (or CLI writer) per project
        self.guard.notice.connect(lambda m: self.statusBar().showMessage(m, 15000))
        self.canvas.hovered.connect(self._show_position)
        self.canvas.zoom_changed.connect(self.status.show_zoom)
        QShortcut(QKeySequence("Escape"), self, activated=self.controller.cancel_polygon)
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
            ("brush_bigger", c.bigger), ("brush_smaller", c.smaller),
            ("next_image", lambda: self.step_image(+1)), ("previous_image", lambda: self.step_image(-1)),
            ("accept", self.accept_current), ("fit", self.canvas.fit),
            ("zoom_actual", lambda: self.canvas.set_zoom(1.0)), ("segment", self.segment),
            ("segment_anyway", lambda: self.segment(anyway=True)),
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

    def _make_menus(self) -> None:
        a = self.actions_by_name
        menus = {
            "&File": ["new_project", "open_project", None, "add_images", "add_folder", None, "save", None, "quit"],
            "&Edit": ["undo", "redo", None, "segment", "segment_anyway", "auto_propose", "accept"],
            "&View": ["fit", "zoom_actual", None, "toggle_labels", "outline", None, "next_image", "previous_image"],
            "&Tools": ["brush", "eraser", "fill", "polygon", None, "brush_bigger", "brush_smaller"],
        }
        for title, names in menus.items():
            menu = self.menuBar().addMenu(title)
            for name in names:
                menu.addSeparator() if name is None else menu.addAction(a[name])
        bar = self.addToolBar("Main")
        bar.setObjectName("main_toolbar")
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for name in ("open_project", "add_images", None, "segment", "accept", None, "undo", "redo", None,
                     "previous_image", "next_image", None, "fit"):
            bar.addSeparator() if name is None else bar.addAction(a[name])

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
        self.leave_current()
        self._stop_loop()
        self.guard.release_previous()  # the previous project is saved and its workers stopped
        self.project = project
        self.saver.set_project(project)
        self._spent.clear()
        self.settings.setValue("last_project", str(project.root))
        self.tools.set_classes(project.classes)
        self.controller.set_value(2)
        self.image_list.set_images(project.images)
        rgbs = [c.rgb for c in project.classes]
        self._lut = colour_table(rgbs)
        self._proposal_luts = proposal_tables(rgbs)
        self._learning_luts = learning_proposal_tables(rgbs)
        self.training_panel.plot.clear()
        self.loop = LoopController(project, self.training_panel, self.models_panel,
                                   self._train_config, self._device, self)
        self.loop.proposal_ready.connect(self._on_proposal)
        self.loop.proposal_failed.connect(self._on_proposal_failed)
        self.loop.message.connect(lambda m: self.statusBar().showMessage(m, 10000))
        self.loop.error.connect(self._error)
        self.loop.device_named.connect(self.status.show_device)
        self.loop.checkpoint_changed.connect(lambda _c: self._prefetch_next())
        self._update_title()
        first = next((e for e in project.images if e.status != STATUS_ACCEPTED), None)
        first = first or (project.images[0] if project.images else None)
        if first is not None:
            self.show_image(first.id)
        else:
            self.statusBar().showMessage("Add images to the project: File > Add images (Ctrl+I).")
        return True

    def ask_add_images(self) -> None:
        if files := dialogs.ask_image_files(self):
            self.add_images(files)

    def ask_add_folder(self) -> None:
        if folder := dialogs.ask_image_folder(self):
            self.add_images(folder)

    def add_images(self, paths: list[str]) -> None:
        if self.project is None:
            self._error("No project", "Create or open a project first (File > New project).")
            return
        dialog = QProgressDialog("Adding images…", "Stop", 0, 1, self)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.setMinimumDuration(300)  # a few files add without a dialog flashing up

        def progress(done: int, total: int) -> bool:
            dialog.setMaximum(max(1, total))
            dialog.setValue(done)  # a modal progress dialog keeps the window painting
            return not dialog.wasCanceled()

        try:
            report = self.project.add_images(paths, progress=progress)
        except SegdeskError as exc:
            self._error("Cannot add images", str(exc))
            return
        finally:
            dialog.close()
        self.image_list.set_images(self.project.images)
        if self.current is not None:
            self.image_list.select(self.current.image_id)
        message = f"Added {len(report.added)} image(s)" + (", then stopped." if report.cancelled else ".")
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
        self.leave_current()
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
        doc = self.saver.take_unsaved(image_id)
        on_disk = doc is None
        if doc is None:
            doc = self._load_document(image_id)
        self.saver.opened(image_id, doc, on_disk)
        window = display.default_window(image)
        self.current = OpenImage(image_id, image, doc, window)
        self.canvas.set_image(display.render(image, window))
        overlay = LabelOverlayItem(doc.label, self._lut)
        overlay.setOpacity(self.tools.opacity_slider.value() / 100.0)
        overlay.set_outline(self.actions_by_name["outline"].isChecked())
        overlay.setVisible(self.actions_by_name["toggle_labels"].isChecked())
        self.canvas.set_overlay(overlay)
        self.controller.set_document(doc)
        self.windowing.set_image(image, window)
        self.image_list.select(image_id)
        self.canvas.fit()
        self.status.proposal.setText("")
        if entry.status != STATUS_ACCEPTED and self.loop is not None:
            if self.actions_by_name["auto_propose"].isChecked():
                self.current.asked(self.loop.segment(image_id, prefetch=self.loop.cached(image_id) is None))
            self._prefetch_next()
        return True

    def _load_document(self, image_id: str) -> LabelDocument:
        label, warning = label_files.load_for_editing(self.project, image_id)
        if warning:
            self._error("Label not loaded", warning)
        return LabelDocument(label)

    def leave_current(self) -> None:
        """Save the current image's label (waiting for the writer) before switching away or closing."""
        if self.current is None:
            return
        self.controller.finish_stroke()
        self.controller.cancel_polygon()
        self.saver.close()
        cur = self.current
        self._spent[cur.image_id] = self._spent.get(cur.image_id, 0.0) + cur.seconds_open()
        self.controller.set_document(None)
        self.canvas.set_proposal(None)
        self.canvas.set_overlay(None)
        self.canvas.set_image(None)
        self.current = None

    def step_image(self, step: int) -> None:
        if self.project is None or not self.project.images:
            return
        ids = [e.id for e in self.project.images]
        index = ids.index(self.current.image_id) if self.current else -step
        self.show_image(ids[(index + step) % len(ids)])

    # ----- proposals and accept

    def segment(self, anyway: bool = False) -> None:
        """The one button: show the model's proposal for the current image. ``anyway``: also when
        the model is still learning (its proposals cost more to correct than drawing)."""
        if self.current is not None and self.loop is not None:
            if self.current.asked(self.loop.segment(self.current.image_id, anyway=anyway)):
                self.status.proposal.setText("segmenting…")

    def _prefetch_next(self) -> None:
        if self.current is not None and self.loop is not None:
            following = self.project.next_unaccepted(self.current.image_id)
            if following is not None and following != self.current.image_id:
                self.loop.segment(following, prefetch=True)

    def _on_proposal(self, image_id: str, label: np.ndarray, checkpoint: str, learning: bool,
                     request_id: int) -> None:
        """Show a proposal under the label. ``learning``: from a model still learning, shown on
        request; drawn as a dashed outline without tint, and said so, as not yet helpful."""
        cur = self.current
        if cur is None or cur.image_id != image_id or self.project.image(image_id).status == STATUS_ACCEPTED:
            return  # a prefetch, or an answer for an image the user has left: cached, not shown
        if request_id < cur.newest_request or label.shape != cur.doc.shape:
            return  # stale: a newer request for this image is on its way
        cur.newest_request = request_id  # an older answer arriving later is stale too
        cur.proposal, cur.proposal_checkpoint, cur.proposal_learning = label, checkpoint, learning
        fill, edge = self._learning_luts if learning else self._proposal_luts
        item = LabelOverlayItem(label, fill, edge_lut=edge, dash=LEARNING_DASH if learning else 0)
        item.setVisible(self.actions_by_name["toggle_labels"].isChecked())
        self.canvas.set_proposal(item)
        shown = " (still learning: shown on request)" if learning else ""
        self.status.proposal.setText(f"proposal from model {checkpoint}{shown}: correct it, then Accept (Enter)")

    def _on_proposal_failed(self, image_id: str, message: str) -> None:
        if self.current is not None and self.current.image_id == image_id:
            self.status.proposal.setText("")
            self.statusBar().showMessage(f"No proposal: {message}", 10000)

    def accept_current(self) -> None:
        """Accept proposal plus corrections (unlabelled pixels become background) and go on."""
        if self.project is None or self.current is None:
            return
        self.controller.finish_stroke()
        cur = self.current
        self.saver.flush()
        label = encoding.merge_accept(cur.doc.label, cur.proposal)
        seconds = self._spent.pop(cur.image_id, 0.0) + cur.seconds_open()
        try:
            accepted = self.project.accept(cur.image_id, label, seconds, proposal_checkpoint=cur.proposal_checkpoint)
        except SegdeskError as exc:
            self._spent[cur.image_id] = seconds
            self._error("Not accepted", f"{exc}\nYour label is kept in memory; try again.")
            return
        cur.opened_at += cur.seconds_open()  # time restarts if the user stays here
        cur.doc.set_label(accepted)
        cur.proposal = None
        self.canvas.set_proposal(None)
        self.saver.mark_saved(cur.image_id, cur.doc)
        self.canvas.overlay.refresh(None)
        self.image_list.set_status(self.project.image(cur.image_id))
        self.statusBar().showMessage(f"Accepted {Path(self.project.image(cur.image_id).source).name}.", 5000)
        if self.loop is not None:
            self.loop.image_accepted()
        following = self.project.next_unaccepted(cur.image_id)
        if following is not None:
            self.show_image(following)
        else:
            self.statusBar().showMessage("Every image in the project is accepted.", 10000)

    # ----- saving

    def save_now(self) -> None:
        self.saver.save_all()
        self.saver.flush()

    def _on_label_stored(self, image_id: str) -> None:
        self.image_list.set_status(self.project.image(image_id))
        if self.loop is not None:
            self.loop.labels_saved()

    def has_unsaved(self) -> bool:
        self.saver.flush()
        return bool(self.saver.unsaved_ids())

    # ----- view

    def _set_window(self, window: tuple[float, float] | None) -> None:
        cur = self.current
        if cur is None or cur.window is None:
            return
        cur.window = window or display.default_window(cur.image)
        self.canvas.update_image(display.render(cur.image, cur.window))
        self.windowing.show_window(cur.window)

    def _show_position(self, x: float, y: float) -> None:
        if self.current is not None:
            names = ["not labelled", "background"] + [c.name for c in self.project.classes]
            self.status.show_pixel(x, y, self.current.image.pixels, self.current.doc.label, names)

    # ----- close

    def _stop_loop(self) -> None:
        if self.loop is not None:
            if not self.loop.shutdown(SHUTDOWN_TIMEOUT_MS):
                log.error("a worker did not stop in time")
            self.loop.deleteLater()
            self.loop = None

    def closeEvent(self, event: QCloseEvent) -> None:
        self.leave_current()
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
        self.saver.shutdown()
        self.guard.release()
        event.accept()
