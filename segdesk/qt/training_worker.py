"""The training worker: its own model and optimizer on its own thread (DESIGN.md "Threads").

It reads saved labels from disk (never the GUI's arrays), stops within one step when cancelled,
reports progress as plain dicts, and publishes weights only as finished checkpoint files. Every wait
(for labels, for a stop, for a running proposal) is on the TrainingGate it shares with the
inference worker (segdesk.ml.gate).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot

from segdesk.core.errors import SegdeskError
from segdesk.ml.gate import TrainingGate
from segdesk.ml.states import ERROR, STOPPED, TRAINING, WAITING

log = logging.getLogger(__name__)


class TrainingWorker(QObject):
    progress = Signal(object)  # dict: step, loss, val_dice, val_dice_per_class, images_per_s, checkpoint, state
    checkpoint_saved = Signal(str)  # checkpoint id
    state_changed = Signal(str)  # one of WAITING, TRAINING, IMPROVED, STOPPED, ERROR
    failed = Signal(str)
    finished = Signal()

    def __init__(self, project_root: Path, config=None, device: str | None = None,
                 gate: TrainingGate | None = None):
        """``gate``: shared with the inference worker, which holds it while it segments: training
        then pauses after its current step, so a proposal never waits behind more than one step."""
        super().__init__()
        self._gate = gate or TrainingGate()
        self._root = Path(project_root)
        self._config = config
        self._device = device
        self._last_checkpoint: str | None = None

    # thread-safe, called from the GUI thread
    def cancel(self) -> None:
        self._gate.stop()

    def arm(self) -> None:
        """Before ``run`` is queued: a stop asked after this (even before the run begins on its
        thread) ends that run. Clearing the stop at the run's start instead would lose a cancel
        that came between the request and the start, and the run would never end."""
        self._gate.clear_stop()

    def labels_changed(self) -> None:
        self._gate.announce_labels()

    @Slot()
    def run(self) -> None:
        try:
            self._train()
        except SegdeskError as exc:
            self.state_changed.emit(ERROR)
            self.failed.emit(str(exc))
        except MemoryError:
            self.state_changed.emit(ERROR)
            self.failed.emit("Training ran out of memory. Lower the crop size or batch size.")
        except Exception as exc:  # noqa: BLE001 - reported through a signal, never raised in the thread
            log.exception("training failed")
            self.state_changed.emit(ERROR)
            self.failed.emit(f"Training stopped with an error: {exc}")
        else:
            self.state_changed.emit(STOPPED)
        finally:
            self.finished.emit()

    def _train(self) -> None:
        from segdesk.ml import device as ml_device
        from segdesk.ml.config import TrainConfig
        from segdesk.ml.train import Trainer

        ml_device.limit_cpu_threads()
        trainer = Trainer(self._root, self._config or TrainConfig(), device=self._device, gate=self._gate)
        while not self._gate.stopped:
            if not trainer.has_data:
                self.state_changed.emit(WAITING)
                trainer.wait_for_labels()
                continue
            self.state_changed.emit(TRAINING)
            trainer.run(on_progress=self._report)
            if self._gate.stopped:
                return
            # patience ran out: announced labels restart it
            self.state_changed.emit(STOPPED)
            if self._gate.wait_for_labels():
                trainer.refresh_labels()

    def _report(self, progress) -> None:
        data = dataclasses.asdict(progress) if dataclasses.is_dataclass(progress) else dict(progress)
        self.progress.emit(data)
        checkpoint = data.get("checkpoint")
        if checkpoint and checkpoint != self._last_checkpoint:  # Progress repeats the newest one
            self._last_checkpoint = checkpoint
            self.checkpoint_saved.emit(checkpoint)
        if data.get("state"):
            self.state_changed.emit(data["state"])
