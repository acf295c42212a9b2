"""The labelling loop: proposals from the inference worker, fine-tuning in the training worker.

Lives on the GUI thread and talks to both workers only through queued signals with plain data.
Keeps the newest-request bookkeeping (stale proposals are dropped), a bounded proposal cache,
the auto-start rule and which checkpoint proposes (newest, or one the user chose).

It holds no widgets: the training and models panels bind to its signals (their ``bind``) and call
its methods, so the loop is tested without a window.

A trainer elsewhere (``segdesk train --follow`` on a GPU server sharing the project folder) is
watched through its heartbeat (qt/trainer_elsewhere.py): while it is alive the loop starts no
trainer of its own, shows that one's progress, and its checkpoints propose as the local trainer's
do. Whoever trains holds the project's models lock, so two trainers never write one project.

A model still learning withholds its proposals; ``segment(..., anyway=True)`` asks for one
regardless ("show anyway"). Such a proposal comes with ``learning`` True, and the cache keeps it
apart from ordinary ones, so Segment never serves it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from segdesk.core import trainer_presence
from segdesk.core.errors import SegdeskError
from segdesk.core.project import Project
from segdesk.core.project_lock import MODELS, LockUnavailable, ProjectLock, ProjectLocked
from segdesk.ml import postprocess
from segdesk.ml.gate import TrainingGate
from segdesk.qt.actions import shortcut_text
from segdesk.qt.inference_worker import InferenceWorker
from segdesk.qt.trainer_elsewhere import TrainerElsewhere
from segdesk.qt.training_worker import TrainingWorker
from segdesk.qt.worker_thread import WorkerThread

log = logging.getLogger(__name__)

CACHE_SIZE = 16
# proposals kept in memory, in bytes, besides the newest (always kept): sixteen proposals of a
# 20,000 px image would be 6.4 GB; one evicted is asked for again (and is on disk in proposals/)
CACHE_BYTES = 1 << 30
AUTO_START_KEY = "auto_train_after"
DEFAULT_AUTO_START = 1  # a part of the first accepted image judges the first model (ml/data.py)
# nice values of the inference thread (worker_thread.py) and of the trainer process
# (train_process.lower_priority): proposals and clicks wait on the inference
# worker, so it runs closer to the GUI thread than training, which can always wait
INFERENCE_NICE = 5
TRAINING_NICE = 10
_gpu_warned = False


@dataclass(frozen=True)
class TrainingStatus:
    running: bool = False
    state: str = "not started"  # in words: "starting", the training worker's states, "stopping"
    elsewhere: str = ""  # "HOST (device)" while a trainer elsewhere trains this project


class LoopController(QObject):
    # image id, label (1 = background, 2.. classes), checkpoint, learning (a model still learning,
    # shown on request), request id (the one segment() returned; a newer request has a larger id)
    proposal_ready = Signal(str, object, str, bool, int)
    proposal_failed = Signal(str, str)  # image id, message
    # image id: the proposal_failed that follows is a withholding (a model still learning, an image it is
    # unsure of), not a failure
    proposal_withheld = Signal(str)
    message = Signal(str)  # for the status bar
    error = Signal(str, str)  # title, message: shown once in a dialog
    device_named = Signal(str)
    checkpoint_changed = Signal(str)  # the checkpoint that now proposes
    checkpoints_changed = Signal(list)  # the metadata of every checkpoint, oldest first
    follow_latest_changed = Signal(bool)  # whether each newly saved checkpoint proposes at once
    status_changed = Signal(object)  # TrainingStatus
    progress = Signal(object)  # training figures, the dict TrainingWorker.progress sends
    scored = Signal(str, str, float)  # image id, checkpoint, uncertainty: a scouted proposal was stored

    _load = Signal(str)
    # request id, image id, path, frame (-1: none), prefetch, ungated (show anyway)
    _request = Signal(int, str, str, int, bool, bool, object)
    _start = Signal()
    _list = Signal()
    _train = Signal()

    def __init__(self, project: Project, train_config=None, device: str | None = None, parent=None,
                 store_setting: Callable[..., None] | None = None):
        """``store_setting(key, value, failed=callback)``: how a setting reaches project.json (the
        window's project writer, off the GUI thread); None: written here (tests, scripts)."""
        super().__init__(parent)
        self.project = project
        self._store_setting = store_setting
        self._next_id = 0
        # (image id, learning) -> (checkpoint, label): shown-anyway proposals never answer Segment
        self._cache: OrderedDict[tuple[str, bool], tuple[str, np.ndarray]] = OrderedDict()
        # (image id, ungated) -> (checkpoint, request id)
        self._pending: dict[tuple[str, bool], tuple[str | None, int]] = {}
        # image id -> (checkpoint, why): images the model withholds its proposal on (unsure of
        # them); a plain Segment there is answered at once instead of computed again
        self._unsure_of: dict[str, tuple[str, str]] = {}
        self.active_checkpoint: str | None = None
        self.checkpoints: list[dict] = []
        self.follow_latest = True
        self.status = TrainingStatus()

        gate = TrainingGate()  # training yields the device to a proposal after one step
        self._inference = InferenceWorker(project.root / "models", project.root / "proposals",
                                          project.n_classes, device, gate)
        # below the GUI thread; training below proposals and clicks (worker_thread.py)
        self._inference_thread = WorkerThread(self._inference, "segdesk-inference", nice=INFERENCE_NICE)
        self._load.connect(self._inference.load_checkpoint)
        self._request.connect(self._inference.request)
        self._start.connect(self._inference.start)
        self._list.connect(self._inference.list_models)
        self._inference.models_listed.connect(self._on_models_listed)
        self._inference.model_loaded.connect(self._on_model_loaded)
        self._inference.model_failed.connect(self._on_model_failed)
        self._inference.prediction_ready.connect(self._on_prediction)
        self._inference.prediction_failed.connect(self._on_prediction_failed)
        self._inference.prediction_withheld.connect(self._on_prediction_withheld)
        self._inference.device_probed.connect(self._on_device)
        self._inference.scored.connect(self.scored)

        # training runs in a child process (its own GIL; segdesk.ml.train_process); this thread only
        # relays its reports, and is not niced: a relay preempted while holding the GIL would keep
        # the GUI thread waiting, which is what the child process is for
        self._trainer = TrainingWorker(project.root, train_config, device, gate, child_process=True,
                                       nice=TRAINING_NICE)
        self._trainer_thread = WorkerThread(self._trainer, "segdesk-training")
        self._train.connect(self._trainer.run)
        self._trainer.progress.connect(self.progress)
        self._trainer.state_changed.connect(self._on_training_state)
        self._trainer.checkpoint_saved.connect(self._on_checkpoint_saved)
        self._trainer.failed.connect(lambda m: self.error.emit("Training error", m))
        self._trainer.finished.connect(self._on_training_finished)

        self._models_lock: ProjectLock | None = None  # held while this window trains
        self.elsewhere = TrainerElsewhere(project.root, self)
        self.elsewhere.changed.connect(self._on_elsewhere)
        self.elsewhere.progress.connect(self.progress)
        self.elsewhere.checkpoint_saved.connect(self._on_checkpoint_saved)
        self.elsewhere.start()

        self._start.emit()  # torch is imported on the worker thread, not here
        if self.elsewhere.alive:
            self._on_elsewhere(self.elsewhere.alive)
        self._maybe_auto_start()

    # ----- proposals

    def segment(self, image_id: str, prefetch: bool = False, anyway: bool = False, pixels=None) -> int:
        """Ask for the proposal of an image; the request id its answer will carry. 0 (with a message)
        when there is no model yet, or when the model is still learning and ``anyway`` (the user's
        "show anyway") is not given. ``pixels``: the image's own, when the window has it open (the
        worker reads them, never writes; else it reads the file: a second copy of a 20,000 px image
        is 0.8 GB)."""
        if self.active_checkpoint is None:
            if not prefetch:
                self.message.emit(f"No trained model yet: {self.start_hint}.")
            return 0
        reason = self.withheld_reason()
        if reason and not anyway:  # told for prefetches too: the window shows it only for the image on screen
            self._withheld(image_id, reason)
            return 0
        known = self._unsure_of.get(image_id)
        if not anyway and known is not None and known[0] == self.active_checkpoint:
            self._withheld(image_id, known[1])
            return 0
        # "anyway" on a model that proposes is a plain Segment but for an image it withholds its proposal
        # on (postprocess.unlike_held_out); a plain proposal cached is that image's answer either way
        ungated = bool(reason) or anyway
        cached = self._cache.get((image_id, ungated))
        if anyway and not reason and (cached is None or cached[0] != self.active_checkpoint):
            cached = self._cache.get((image_id, False))
        pending = self._pending.get((image_id, ungated))
        if prefetch and pending is not None and pending[0] == self.active_checkpoint:
            return pending[1]  # already on its way
        self._next_id += 1
        request_id = self._next_id
        if cached is not None and cached[0] == self.active_checkpoint:
            if not prefetch:  # next turn of the event loop: the image paints first, then its proposal
                QTimer.singleShot(0, lambda: self.proposal_ready.emit(image_id, cached[1], cached[0], ungated,
                                                                      request_id))
            return request_id
        self._pending[(image_id, ungated)] = (self.active_checkpoint, self._next_id)
        self._inference.supersede(self._next_id, prefetch)
        entry = self.project.image(image_id)
        path = str(self.project.source_path(entry))
        frame = -1 if entry.frame is None else entry.frame
        self._request.emit(self._next_id, image_id, path, frame, prefetch, ungated, pixels)
        return request_id

    def withheld_reason(self, checkpoint: str | None = None) -> str:
        """Why a model (default: the active one) shows no proposals, or "" when it does. A model
        whose proposals took more correcting than drawing on the held-out accepted images
        withholds them (segdesk.ml.postprocess), so the user draws instead of erasing a wrong
        mask, unless they ask to see it anyway."""
        checkpoint = checkpoint or self.active_checkpoint
        spec = self._postprocess_spec(checkpoint)
        if not postprocess.withholds(spec):
            return ""
        # the way to see it anyway comes first: a long status message is cut at the right
        return (f"model {checkpoint} is still learning ({shortcut_text('segment_anyway')} shows it anyway): "
                f"{postprocess.why_withheld(spec)}. Draw this one; each accept teaches it.")

    def _postprocess_spec(self, checkpoint: str | None) -> dict | None:
        """The checkpoint's post-processing and show-or-withhold spec, from its listed metadata."""
        meta = next((m for m in self.checkpoints if m.get("id") == checkpoint), None)
        return (meta or {}).get("postprocess")

    def cached(self, image_id: str) -> tuple[str, np.ndarray] | None:
        """The ordinary (not shown-anyway) proposal of the active model, if cached."""
        hit = self._cache.get((image_id, False))
        return hit if hit is not None and hit[0] == self.active_checkpoint else None

    def _cached_bytes(self) -> int:
        return sum(label.nbytes for _, label in self._cache.values())

    def _forget_request(self, request_id: int) -> None:
        for key in [k for k, (_, r) in self._pending.items() if r == request_id]:
            del self._pending[key]

    def _on_prediction(self, request_id: int, image_id: str, label: np.ndarray, checkpoint: str,
                       learning: bool) -> None:
        self._forget_request(request_id)
        self._cache[(image_id, learning)] = (checkpoint, label)
        self._cache.move_to_end((image_id, learning))
        while len(self._cache) > CACHE_SIZE or (len(self._cache) > 1 and self._cached_bytes() > CACHE_BYTES):
            self._cache.popitem(last=False)
        self.proposal_ready.emit(image_id, label, checkpoint, learning, request_id)

    def _on_prediction_withheld(self, request_id: int, image_id: str, checkpoint: str, unsure: float) -> None:
        """A plain request reached a model still learning (it was loaded after the request), or an
        image the model withholds its proposal on (postprocess.unlike_held_out)."""
        self._forget_request(request_id)
        reason = self.withheld_reason(checkpoint)
        spec = self._postprocess_spec(checkpoint)
        if not reason and unsure >= 0 and postprocess.unlike_held_out(spec, unsure):
            reason = (f"model {checkpoint} is unsure of this image ({shortcut_text('segment_anyway')} shows it "
                      f"anyway): {postprocess.why_unlike(spec, unsure)}. Draw this one; each accept teaches it.")
            self._unsure_of[image_id] = (checkpoint, reason)
        self._withheld(image_id, reason or f"model {checkpoint} is still learning: it shows no proposals yet.")

    def _withheld(self, image_id: str, reason: str) -> None:
        self.proposal_withheld.emit(image_id)
        self.proposal_failed.emit(image_id, reason)

    def _on_prediction_failed(self, request_id: int, image_id: str, message: str) -> None:
        self._forget_request(request_id)
        if message:  # an empty message: superseded by a newer request, nothing to tell
            self.proposal_failed.emit(image_id, message)

    # ----- models

    def _on_device(self, name: str, problem: str) -> None:
        global _gpu_warned
        self.device_named.emit(name)
        if problem and not _gpu_warned:  # once per session, not once per project opened
            _gpu_warned = True
            self.error.emit("GPU not used", problem)

    def _on_checkpoint_saved(self, checkpoint_id: str) -> None:
        self._list.emit()
        if self.follow_latest:
            self._load.emit(checkpoint_id)

    def use_checkpoint(self, checkpoint_id: str) -> None:
        """Rollback: the user chooses which checkpoint proposes; newer ones no longer replace it."""
        self.set_follow_latest(False)
        self._load.emit(checkpoint_id)

    def set_follow_latest(self, on: bool) -> None:
        if on != self.follow_latest:
            self.follow_latest = on
            self.follow_latest_changed.emit(on)
        if on and self.checkpoints and self.checkpoints[-1]["id"] != self.active_checkpoint:
            self._load.emit(self.checkpoints[-1]["id"])

    def _on_model_loaded(self, checkpoint_id: str, device_name: str) -> None:
        self.active_checkpoint = checkpoint_id
        self.device_named.emit(device_name)
        if self.withheld_reason():
            self.message.emit(f"Model {checkpoint_id} is still learning: it shows no proposals yet "
                              f"({shortcut_text('segment_anyway')} shows one anyway).")
        else:
            self.message.emit(f"Model {checkpoint_id} proposes now.")
        self.checkpoint_changed.emit(checkpoint_id)

    def _on_model_failed(self, checkpoint_id: str, message: str) -> None:
        kept = f" Model {self.active_checkpoint} keeps proposing." if self.active_checkpoint else ""
        self.error.emit("Model not loaded", message + kept)

    def _on_models_listed(self, checkpoints: list[dict], _current: str) -> None:
        self.checkpoints = checkpoints
        self.checkpoints_changed.emit(checkpoints)

    # ----- training

    def image_accepted(self) -> None:
        self._cache_clear_stale()
        self._trainer.labels_changed()
        self._maybe_auto_start()

    def labels_saved(self) -> None:
        self._trainer.labels_changed()

    def _cache_clear_stale(self) -> None:
        for key in [k for k, (c, _) in self._cache.items() if c != self.active_checkpoint]:
            del self._cache[key]
        self._unsure_of = {k: v for k, v in self._unsure_of.items() if v[0] == self.active_checkpoint}

    @property
    def inference(self) -> InferenceWorker:
        """The inference worker, for requests other than proposals (the Click tool's)."""
        return self._inference

    @property
    def auto_start(self) -> int:
        """Training starts by itself once this many images are accepted."""
        return int(self.project.settings.get(AUTO_START_KEY, DEFAULT_AUTO_START))

    @property
    def start_hint(self) -> str:
        """What starts training, for messages: "accept an image (N images) and training starts by itself"."""
        n = self.auto_start
        return f"accept {'an image' if n == 1 else f'{n} images'} and training starts by itself"

    def set_auto_start(self, n: int) -> None:
        self.project.settings[AUTO_START_KEY] = n
        if self._store_setting is not None:
            self._store_setting(AUTO_START_KEY, n, failed=self._setting_not_saved)
            self._maybe_auto_start()
            return
        try:
            self.project.save()
        except SegdeskError as exc:  # a setting not saved is reported, not fatal: it holds until closing
            log.warning("auto-start setting not saved: %s", exc)
            self.message.emit(f"Setting not saved: {exc}")
        self._maybe_auto_start()

    def _setting_not_saved(self, message: str) -> None:
        log.warning("auto-start setting not saved: %s", message)
        self.message.emit(message)

    def _maybe_auto_start(self) -> None:
        if (not self.training_running and not self.elsewhere.alive
                and len(self.project.accepted_ids()) >= self.auto_start):
            self.start_training()

    @property
    def training_running(self) -> bool:
        return self.status.running

    def _set_status(self, **change) -> None:
        self.status = replace(self.status, **change)
        self.status_changed.emit(self.status)

    def start_training(self) -> None:
        if self.training_running:
            return
        if self.elsewhere.alive:
            self.message.emit(f"Training runs on {trainer_presence.describe(self.elsewhere.alive)}.")
            return
        if not self._hold_models_lock():
            return
        self._set_status(running=True, state="starting", elsewhere="")
        self._trainer.arm()
        self._train.emit()

    def _hold_models_lock(self) -> bool:
        """One trainer per project: this window's, or a follower's elsewhere (segdesk train --follow)."""
        try:
            self._models_lock = ProjectLock.acquire(self.project.root, owner="segdesk window", kind=MODELS)
        except ProjectLocked as exc:
            self.message.emit(str(exc))
            return False
        except LockUnavailable:
            return True  # a read-only folder: training will say why it cannot save
        try:
            self.project.clean_models()  # a crashed trainer's temporaries
        except OSError as exc:
            log.warning("could not clean models/: %s", exc)
        return True

    def _release_models_lock(self) -> None:
        if self._models_lock is not None:
            self._models_lock.release()
            self._models_lock = None

    def _on_elsewhere(self, record: dict | None) -> None:
        """A trainer elsewhere started beating, or went quiet."""
        if record is not None:
            where = trainer_presence.describe(record)
            if not self.training_running:
                self._set_status(state=f"training on {where}", elsewhere=where)
            return
        last = self.elsewhere.last_seen
        host = last.get("host") if last else "the other computer"
        self._set_status(state=f"{host} stopped answering: Start training trains here", elsewhere="")
        self.message.emit(f"The trainer on {host} stopped answering; Start training trains here.")

    def stop_training(self) -> None:
        self._trainer.cancel()
        self._set_status(state="stopping")

    def _on_training_state(self, state: str) -> None:
        self._set_status(state=state)

    def _on_training_finished(self) -> None:
        self._release_models_lock()  # a trainer elsewhere may take over now
        self._set_status(running=False)

    # ----- shut-down

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Stop training and inference and wait for both threads (before QApplication exits)."""
        self.elsewhere.stop()
        # a trainer process still in its step a second after the stop is ended: closing the window
        # waits for no step (a soak on a loaded box waited 2.9 s), and every write it makes is atomic
        self._trainer.cancel(grace_s=min(1.0, timeout_ms / 2000))
        ok_train = self._trainer_thread.stop(timeout_ms)
        ok_infer = self._inference_thread.stop(timeout_ms)
        self._release_models_lock()
        # the proposals kept for quick switches go now, not when Qt and Python let go of this object
        # (a 10,000 px image's, 0.1 GB, stayed beside the next project's 20,000 px image)
        self._cache.clear()
        self._pending.clear()
        self._unsure_of.clear()
        return ok_train and ok_infer
