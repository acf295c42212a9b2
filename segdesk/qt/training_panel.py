"""Training panel: start/stop, auto-start threshold, state in words, figures, the plan (flips and
turns, working resolution) and a plot. It shows the training of the loop it is bound to."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget

from segdesk.qt.elided_label import ElidedLabel
from segdesk.qt.loop_controller import LoopController, TrainingStatus
from segdesk.qt.metric_plot import MetricPlot


class TrainingPanel(QWidget):
    start_requested = Signal()
    stop_requested = Signal()
    auto_start_changed = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.stop_button = QPushButton("Stop")
        self.start_button.clicked.connect(self.start_requested.emit)
        self.stop_button.clicked.connect(self.stop_requested.emit)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(buttons)
        form = QFormLayout()
        self.auto_start = QSpinBox()
        self.auto_start.setRange(1, 1000)
        self.auto_start.setValue(1)
        self._word_start_after(1)
        self.auto_start.setToolTip("Training starts by itself once this many images are accepted")
        self.auto_start.valueChanged.connect(self._word_start_after)
        self.auto_start.valueChanged.connect(self.auto_start_changed.emit)
        form.addRow("Start after", self.auto_start)
        self.state = ElidedLabel("not started")  # "HOST stopped answering: ..." must not widen the dock
        self.step = QLabel("–")
        self.loss = QLabel("–")
        self.dice = QLabel("–")
        self.speed = QLabel("–")
        self.augmentation = ElidedLabel("–", tooltip=(
            "Flips and turns planned from the accepted labels: one that would change what a class "
            "means (left lung and right lung, the top of an ultrasound image) is left out. "
            'Override per project with the "augmentation" setting in project.json.'))
        self.resolution = ElidedLabel("–", tooltip="How images are resized before the model sees them, "
                                                   "planned from image and object sizes")
        form.addRow("State", self.state)
        form.addRow("Step", self.step)
        form.addRow("Loss", self.loss)
        form.addRow("Validation Dice", self.dice)
        form.addRow("Speed", self.speed)
        form.addRow("Augmentation", self.augmentation)
        form.addRow("Resolution", self.resolution)
        layout.addLayout(form)
        self.plot = MetricPlot()
        layout.addWidget(self.plot, 1)
        self.show_status(TrainingStatus())
        self._bound: list = []  # connections to the loop shown

    def bind(self, loop: LoopController) -> None:
        """Show ``loop``'s training and send the user's requests to it; a previous loop is let go."""
        for connection in self._bound:
            QObject.disconnect(connection)
        self._bound = [
            loop.status_changed.connect(self.show_status),
            loop.progress.connect(self.show_progress),
            self.start_requested.connect(loop.start_training),
            self.stop_requested.connect(loop.stop_training),
            self.auto_start_changed.connect(loop.set_auto_start),
        ]
        self.auto_start.blockSignals(True)
        self.auto_start.setValue(loop.auto_start)
        self.auto_start.blockSignals(False)
        self._word_start_after(loop.auto_start)
        self.show_status(loop.status)

    def _word_start_after(self, n: int) -> None:
        self.auto_start.setSuffix(" accepted image" if n == 1 else " accepted images")

    def show_status(self, status: TrainingStatus) -> None:
        self.start_button.setEnabled(not status.running and not status.elsewhere)
        self.stop_button.setEnabled(status.running)
        self.state.set_full_text(status.state)
        self.start_button.setToolTip(f"Training runs on {status.elsewhere}" if status.elsewhere else "")

    def show_progress(self, data: dict) -> None:
        self.step.setText(str(data.get("step", "–")))
        if data.get("loss") is not None:
            self.loss.setText(f"{data['loss']:.4f}")
        if data.get("val_dice") is not None:
            per_class = data.get("val_dice_per_class") or []
            shown = ["–" if d is None else f"{d:.2f}" for d in per_class]  # None: class not in validation
            detail = f"  ({', '.join(shown)})" if len(per_class) > 1 else ""
            self.dice.setText(f"{data['val_dice']:.3f}{detail}")
        if data.get("images_per_s") is not None:
            number_format = f" in {data['precision']}" if data.get("precision") == "bf16" else ""
            self.speed.setText(f"{data['images_per_s']:.1f} crops/s{number_format}")
        if data.get("augmentation"):
            self.augmentation.set_full_text(data["augmentation"])
        if data.get("working_resolution"):
            self.resolution.set_full_text(data["working_resolution"])
        self.plot.add(int(data.get("step", 0)), data.get("loss"), data.get("val_dice"))
