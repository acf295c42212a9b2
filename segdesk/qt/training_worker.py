"""The training worker: its own model and optimizer on its own thread (DESIGN.md "Threads").

It reads saved labels from disk (never the GUI's arrays), stops within one step when cancelled,
reports progress as plain dicts, and publishes weights only as finished checkpoint files.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot

from segdesk.core.errors import SegdeskError
from segdesk.ml.states import ERROR, STOPPED, TRAINING, WAITING

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5
MAX_YIELD_S = 10.0  # a stuck proposal never stops training for longer


class TrainingWorker(QObject):
    progress = Signal(object)  # dict: step, loss, val_dice, val_dice_per_class, images_per_s, checkpoint, state
    checkpoint_saved = Signal(str)  # checkpoint id
    state_changed = Signal(str)  # one of WAITING, TRAINING, IMPROVED, STOPPED, ERROR
    failed = Signal(str)
    finished = Signal()

    def __init__(self, project_root: Path, config=None, device: str | None = None,
                 proposing: threading.Event | None = None):
        """``proposing`` is set while the inference worker segments: training then pauses after its
        current step, so a proposal never waits behind more than one training step."""
        super().__init__()
        self._proposing = proposing or threading.Event()
        self._root = Path(project_root)
        self._config = config
        self._device = device
        self._stop = threading.Event()
        self._labels_changed = threading.Event()
        self._last_checkpoint: str | None = None

    # thread-safe, called from the GUI thread
    def cancel(self) -> None:
        self._stop.set()
        self._labels_changed.set()  # wake a waiting loop

    def labels_changed(self) -> None:
        self._labels_changed.set()

    @Slot()
    def run(self) -> None:
        self._stop.clear()
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
        trainer = Trainer(self._root, self._config or TrainConfig(), device=self._device)
        while not self._stop.is_set():
            self._labels_changed.clear()
            trainer.refresh_labels()
            if not trainer.has_data:
                self.state_changed.emit(WAITING)
                self._labels_changed.wait(IDLE_POLL_S)
                continue
            self.state_changed.emit(TRAINING)
            trainer.run(on_progress=self._report, should_stop=self._should_stop)
            if self._stop.is_set():
                return
            # patience ran out: wait for new labels, which restart it
            self.state_changed.emit(STOPPED)
            while not self._stop.is_set() and not self._labels_changed.wait(IDLE_POLL_S):
                pass

    def _should_stop(self) -> bool:
        """Called by the trainer after every step: stop, or yield the device to a proposal."""
        deadline = time.monotonic() + MAX_YIELD_S
        while self._proposing.is_set() and not self._stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)
        return self._stop.is_set()

    def _report(self, progress) -> None:
        data = dataclasses.asdict(progress) if dataclasses.is_dataclass(progress) else dict(progress)
        self.progress.emit(data)
        checkpoint = data.get("checkpoint")
        if checkpoint and checkpoint != self._last_checkpoint:  # Progress repeats the newest one
            self._last_checkpoint = checkpoint
            self.checkpoint_saved.emit(checkpoint)
        if data.get("state"):
            self.state_changed.emit(data["state"])
