"""The inference worker: its own model in eval mode, on its own thread (DESIGN.md "Threads").

The GUI asks with ``request(request_id, image_id, path, ...)`` and gets ``prediction_ready``,
``prediction_withheld`` or ``prediction_failed`` back; new weights arrive only as a checkpoint id,
and the model is swapped only when loading succeeded.

A model still learning (its held-out proposals cost more to correct than drawing) withholds its
proposals (segdesk.ml.postprocess); a request with ``ungated`` asks for its proposal anyway, and the
answer says it came from such a model, so the window can mark it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from segdesk.core import encoding, imageio
from segdesk.core.errors import SegdeskError
from segdesk.core.project import write_proposal
from segdesk.ml import postprocess
from segdesk.ml.gate import TrainingGate

log = logging.getLogger(__name__)


class InferenceWorker(QObject):
    model_loaded = Signal(str, str)  # checkpoint id, device name
    model_failed = Signal(str, str)  # checkpoint id, message
    # request id, image id, label (uint8, 1 = background), checkpoint id, learning (shown although
    # the model withholds its proposals: asked for ungated)
    prediction_ready = Signal(int, str, object, str, bool)
    prediction_withheld = Signal(int, str, str)  # request id, image id, checkpoint id: a gated model said no
    prediction_failed = Signal(int, str, str)  # request id, image id, message
    device_probed = Signal(str, str)  # device name, problem ("" when none)
    models_listed = Signal(object, str)  # list of checkpoint metadata dicts, current id ("" if none)

    def __init__(self, models_dir: Path, proposals_dir: Path, n_classes: int, device: str | None = None,
                 gate: TrainingGate | None = None):
        """``gate``: shared with the training worker, which pauses while a proposal is computed."""
        super().__init__()
        self._gate = gate or TrainingGate()
        self._models_dir = Path(models_dir)
        self._proposals_dir = Path(proposals_dir)
        self._n_classes = n_classes
        self._device = device
        self._predictor = None
        self._latest = {False: -1, True: -1}  # newest request id asked for, per kind (prefetch or not)
        self._latest_lock = threading.Lock()

    def supersede(self, request_id: int, prefetch: bool) -> None:
        """Called from the GUI thread when it asks: older requests of the same kind are dropped
        unrun, so a user clicking through images never waits behind proposals nobody looks at."""
        with self._latest_lock:
            self._latest[prefetch] = max(self._latest[prefetch], request_id)

    @Slot(str)
    def load_checkpoint(self, checkpoint_id: str) -> None:
        from segdesk.ml import device as ml_device
        from segdesk.ml.checkpoints import check_compatible
        from segdesk.ml.inference import Predictor

        try:
            ml_device.limit_cpu_threads()
            predictor = Predictor.from_checkpoint(self._models_dir, checkpoint_id, device=self._device)
            check_compatible(predictor.meta, self._n_classes)
        except SegdeskError as exc:
            self.model_failed.emit(checkpoint_id, str(exc))  # the previous model stays
            return
        except Exception as exc:  # noqa: BLE001 - reported, never raised in the thread
            log.exception("loading checkpoint %s failed", checkpoint_id)
            self.model_failed.emit(checkpoint_id, f"Could not load model {checkpoint_id}: {exc}")
            return
        self._predictor = predictor
        self.model_loaded.emit(checkpoint_id, ml_device.device_name(predictor.device))

    @Slot(int, str, str, int, bool, bool)
    def request(self, request_id: int, image_id: str, path: str, frame: int, prefetch: bool,
                ungated: bool = False) -> None:
        """``frame``: the 0-based frame of a multi-frame DICOM file, -1 for other images.
        ``ungated``: the proposal even when the model withholds its proposals ("show anyway")."""
        with self._latest_lock:
            stale = request_id < self._latest[prefetch]
        if stale:
            self.prediction_failed.emit(request_id, image_id, "")  # superseded: dropped unrun
            return
        if self._predictor is None:
            self.prediction_failed.emit(request_id, image_id, "No trained model yet.")
            return
        try:
            image = imageio.read_image(path, frame=None if frame < 0 else frame)
            self._predictor.gate = not ungated
            with self._gate.proposing():
                prediction = self._predictor.predict(image.pixels)
            checkpoint = prediction.checkpoint or ""
            if prediction.withheld:  # the model changed to one still learning since the GUI asked
                self.prediction_withheld.emit(request_id, image_id, checkpoint)
                return
            learning = ungated and postprocess.withholds(self._predictor.postprocess)
            label = encoding.mask_to_label(prediction.classes)
            self._cache(image_id, label, checkpoint, learning)
        except SegdeskError as exc:
            self.prediction_failed.emit(request_id, image_id, str(exc))
            return
        except MemoryError:
            self.prediction_failed.emit(request_id, image_id, "Out of memory while segmenting this image.")
            return
        except Exception as exc:  # noqa: BLE001 - e.g. CUDA out of memory; reported, never raised
            log.exception("segmenting %s failed", image_id)
            self.prediction_failed.emit(request_id, image_id, f"Segmenting failed: {exc}")
            return
        self.prediction_ready.emit(request_id, image_id, label, checkpoint, learning)

    def _cache(self, image_id: str, label: np.ndarray, checkpoint: str, learning: bool) -> None:
        """Store the proposal with the checkpoint that made it (provenance) and whether that model
        was still learning (shown on request); a failure is not fatal. Through the project's own
        writer, which touches no Project object: the GUI thread owns the open project."""
        try:
            write_proposal(self._proposals_dir, image_id, label, checkpoint, learning)
        except SegdeskError as exc:
            log.warning("proposal for %s not cached: %s", image_id, exc)

    @Slot()
    def start(self) -> None:
        """First call on the thread: import torch here (never on the GUI thread), name the device,
        say if an NVIDIA GPU is present but unusable, list the checkpoints and load the current one."""
        from segdesk.ml import device as ml_device

        try:
            name = ml_device.device_name(ml_device.pick_device(self._device))
            problem = ml_device.gpu_problem() or ""
        except SegdeskError as exc:
            name, problem = "CPU", str(exc)
        self.device_probed.emit(name, problem)
        current = self.list_models()
        if current:
            self.load_checkpoint(current)
        if self._predictor is None:
            self._load_fallback(current)

    def _load_fallback(self, failed: str) -> None:
        """At start-up, when the current checkpoint did not load (damaged file, damaged pointer): the
        newest one that fits the project and loads (DESIGN.md "Project on disk"); others are logged."""
        from segdesk.ml import device as ml_device
        from segdesk.ml.checkpoints import CheckpointStore, check_compatible
        from segdesk.ml.inference import Predictor

        for meta in reversed(CheckpointStore(self._models_dir).list()):
            try:
                if meta["id"] == failed:
                    continue
                check_compatible(meta, self._n_classes)
                predictor = Predictor.from_checkpoint(self._models_dir, meta["id"], device=self._device)
                check_compatible(predictor.meta, self._n_classes)
            except Exception as exc:  # noqa: BLE001 - skipped and logged; the next older one is tried
                log.warning("checkpoint %s not used at start-up: %s", meta["id"], exc)
                continue
            log.warning("model %s proposes: the current checkpoint %r did not load", meta["id"], failed)
            self._predictor = predictor
            self.model_loaded.emit(meta["id"], ml_device.device_name(predictor.device))
            return

    @Slot()
    def list_models(self) -> str:
        """Emit the checkpoint list (metadata only) and the pointer's id; return the id."""
        from segdesk.ml.checkpoints import CheckpointStore

        store = CheckpointStore(self._models_dir)
        current = store.current_id() or ""
        self.models_listed.emit(store.list(), current)
        return current
