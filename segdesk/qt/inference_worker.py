"""The inference worker: its own model in eval mode, on its own thread (DESIGN.md "Threads").

The GUI asks with ``request(request_id, image_id, path, ...)`` and gets ``prediction_ready``,
``prediction_withheld`` or ``prediction_failed`` back; new weights arrive only as a checkpoint id,
and the model is swapped only when loading succeeded.

A model still learning (its held-out proposals cost more to correct than drawing) withholds its
proposals, and any model withholds its proposal on an image far less sure than on its held-out ones
(segdesk.ml.postprocess); a request with ``ungated`` asks for the proposal anyway, and the answer
says when it is such a one, so the window can mark it.

Every stored proposal carries its uncertainty (segdesk.ml.uncertainty). When the project's setting
is "least sure first" (segdesk.core.next_image), the worker scouts when idle: after each request and
each model loaded, it proposes for up to ``SCOUT_AHEAD`` upcoming images not accepted that have no
score from the current model, one per turn of its event loop; scouted proposals are only stored
(``scored`` tells), never shown, and training is not paused for them.

What the user waits for comes first: a prefetch (the next image's proposal, asked before it is
shown) or a scouting proposal gives way when a click or a proposal for the image on screen is asked
(``_more_urgent``): the asking thread ends ONNX Runtime's run at once (``Predictor.interrupt``;
torch stops before its next batch of tiles), and the prefetch is asked again behind it. A large
image's prefetch took 3.5 s in ``segdesk bench ui``, and a click made meanwhile waited for all of it.

Clicks (the Click tool, qt/click_session.py): ``refine(request_id, image_id, pixels, clicks, label,
proposal)`` answers with ``refined`` (the box of the pixels the answer changes, and the label it
holds with the answer in) or ``refine_failed``; a newer click supersedes a pending one (``supersede_click``). Everything
proportional to the image's size runs here, so a click costs the GUI thread one copy of the label
and the change itself.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from segdesk.core import encoding, imageio, next_image
from segdesk.core.errors import Cancelled, SegdeskError
from segdesk.core.project import PROJECT_FILE, Project, read_proposal_meta, write_proposal
from segdesk.ml import postprocess
from segdesk.ml.gate import TrainingGate

log = logging.getLogger(__name__)

NO_CLICKS = "This model does not read clicks yet: it learns them as it trains."
SCOUT_AHEAD = 8  # upcoming images scored per model and image on screen, for "least sure first"


def _device_text(predictor) -> str:
    """Where proposals run, for the status bar: the device, and ONNX Runtime when it computes them
    (or why not, when an export exists but cannot be used)."""
    from segdesk.ml import device as ml_device

    text = ml_device.device_name(predictor.device)
    if predictor.engine != "torch":
        return f"{text}, ONNX Runtime"
    return f"{text} (ONNX export not used)" if predictor.engine_note else text


def answered_label(label: np.ndarray, shown: np.ndarray, answer: np.ndarray) -> np.ndarray:
    """The label a window holds once a click's ``answer`` (a class mask) is shown: the answer where it
    differs from what was ``shown`` (label encoding), the user's ``label`` as it was elsewhere. So a
    click does not turn its whole window into unchecked label: the rest keeps showing the proposal."""
    answer = encoding.mask_to_label(answer)
    return np.where(answer != shown, answer, label).astype(np.uint8)


class InferenceWorker(QObject):
    model_loaded = Signal(str, str)  # checkpoint id, device name
    model_failed = Signal(str, str)  # checkpoint id, message
    # request id, image id, label (uint8, 1 = background), checkpoint id, learning (shown although
    # the model withholds its proposals: asked for ungated)
    prediction_ready = Signal(int, str, object, str, bool)
    # request id, image id, checkpoint id, the image's uncertainty (-1: none): a gated model said no
    prediction_withheld = Signal(int, str, str, float)
    prediction_failed = Signal(int, str, str)  # request id, image id, message
    device_probed = Signal(str, str)  # device name, problem ("" when none)
    models_listed = Signal(object, str)  # list of checkpoint metadata dicts, current id ("" if none)
    scored = Signal(str, str, float)  # image id, checkpoint id, uncertainty: a scouted proposal was stored
    # request id, image id, the label with the answer in it (uint8 label encoding) of the box
    # (y0, x0, y1, x1), in image pixels, that holds every pixel the answer changes; checkpoint id
    refined = Signal(int, str, object, object, str)
    refine_failed = Signal(int, str, str)  # request id, image id, message ("" when superseded)
    _scout = Signal()  # queued to itself: the next scouting step runs after whatever was asked meanwhile
    _again = Signal(int, str, str, int, bool, bool, object)  # queued to itself: a prefetch given way, asked again

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
        self._latest_click = -1  # newest click request asked for (guarded by _latest_lock)
        # urgent work asked for and not yet begun (guarded by _latest_lock): clicks to answer, and the
        # newest proposal for the image on screen; a prefetch or a scouting proposal running meanwhile
        # is given up and asked again behind it (``_more_urgent``)
        self._clicks_waiting = 0
        self._shown_begun = -1  # the newest on-screen (not prefetch) request begun
        self._given_way: set[int] = set()  # prefetches given up for urgent work, asked again
        self._withheld_by: dict[str, str] = {}  # image id -> the model that withheld its proposal there
        self._scout_after: str | None = None  # the image asked for last: scouting starts after it
        self._scout_queue: list[tuple[str, str, int]] = []  # (image id, path, frame)
        self._scout_checkpoint: str | None = None  # the model the queue was planned for
        self._scout_woken = False
        self._scout_plan = False  # plan on the next scouting step
        self._project_read: tuple[tuple[int, int, int], Project] | None = None
        self._scout.connect(self._scout_step, Qt.ConnectionType.QueuedConnection)
        self._again.connect(self.request, Qt.ConnectionType.QueuedConnection)

    def supersede(self, request_id: int, prefetch: bool) -> None:
        """Called from the GUI thread when it asks: older requests of the same kind are dropped
        unrun, so a user clicking through images never waits behind proposals nobody looks at."""
        with self._latest_lock:
            self._latest[prefetch] = max(self._latest[prefetch], request_id)
        if not prefetch:
            self._interrupt()

    def supersede_click(self, request_id: int, asked: bool = False) -> None:
        """Called from the GUI thread with each click: older click requests are dropped unrun.
        ``asked``: a ``refine`` request with this id follows (a prefetch running now gives way to it)."""
        with self._latest_lock:
            self._latest_click = max(self._latest_click, request_id)
            self._clicks_waiting += int(asked)
        if asked:
            self._interrupt()

    def _interrupt(self) -> None:
        """End a running prefetch or scouting proposal now (ONNX Runtime stops within one operator;
        torch at the next batch of tiles): it is asked again behind what the user waits for."""
        predictor = self._predictor
        if predictor is not None:
            predictor.interrupt()

    def _more_urgent(self) -> bool:
        """A click or a proposal for the image on screen waits behind the running work (any thread)."""
        with self._latest_lock:
            return self._clicks_waiting > 0 or self._latest[False] > self._shown_begun

    @Slot(int, str, object, object, object, object)
    def refine(self, request_id: int, image_id: str, pixels: np.ndarray, clicks: list, label: np.ndarray,
               proposal: np.ndarray | None) -> None:
        """What is shown (``label``, a copy of the user's label, over ``proposal``, None for none)
        corrected by ``clicks`` (a list of segdesk.core.clicks.Click in image pixels) on ``pixels``
        (the image's own; read-only here)."""
        with self._latest_lock:
            stale = request_id < self._latest_click
            self._clicks_waiting = max(0, self._clicks_waiting - 1)
        if stale:
            self.refine_failed.emit(request_id, image_id, "")
            return
        predictor = self._predictor
        if predictor is None:
            self.refine_failed.emit(request_id, image_id, "No trained model yet: clicks need one.")
            return
        if not predictor.accepts_clicks:
            self.refine_failed.emit(request_id, image_id, NO_CLICKS)
            return
        try:
            shown = encoding.merge_accept(label, proposal)
            with self._gate.proposing():  # training pauses after its current step
                prediction = predictor.refine(pixels, clicks, encoding.label_to_mask(shown), key=image_id)
            y0, x0, y1, x1 = prediction.box
            window = answered_label(label[y0:y1, x0:x1], shown[y0:y1, x0:x1], prediction.classes[y0:y1, x0:x1])
            # only the rows and columns that change reach the GUI thread
            ys, xs = np.nonzero(window != label[y0:y1, x0:x1])
            if len(ys):
                window = np.ascontiguousarray(window[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
                y0, x0, y1, x1 = y0 + int(ys.min()), x0 + int(xs.min()), y0 + int(ys.max()) + 1, x0 + int(xs.max()) + 1
            else:
                window, y1, x1 = window[:0, :0], y0, x0
        except MemoryError:
            self.refine_failed.emit(request_id, image_id, "Out of memory while answering the click.")
            return
        except Exception as exc:  # noqa: BLE001 - reported, never raised in the thread
            log.exception("answering a click on %s failed", image_id)
            self.refine_failed.emit(request_id, image_id, f"The click could not be answered: {exc}")
            return
        self.refined.emit(request_id, image_id, window, (y0, x0, y1, x1), prediction.checkpoint or "")

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
        self.model_loaded.emit(checkpoint_id, _device_text(predictor))
        self._scout_later()

    @Slot(int, str, str, int, bool, bool, object)
    def request(self, request_id: int, image_id: str, path: str, frame: int, prefetch: bool,
                ungated: bool = False, pixels: np.ndarray | None = None) -> None:
        """``frame``: the 0-based frame of a multi-frame DICOM file, -1 for other images.
        ``ungated``: the proposal even when the model withholds its proposals ("show anyway").
        ``pixels``: the image's own from the window (read-only here), or None to read ``path``."""
        with self._latest_lock:
            stale = request_id < self._latest[prefetch]
            if not prefetch:
                self._shown_begun = max(self._shown_begun, request_id)
        gave_way = request_id in self._given_way
        self._given_way.discard(request_id)  # here, so one dropped as stale is not kept either
        if stale:
            self.prediction_failed.emit(request_id, image_id, "")  # superseded: dropped unrun
            return
        if self._predictor is None:
            self.prediction_failed.emit(request_id, image_id, "No trained model yet.")
            return
        checkpoint = self._predictor.checkpoint
        if gave_way and (self._stored_by(image_id, checkpoint)  # the urgent request was this image's
                         or (not ungated and self._withheld_by.get(image_id) == checkpoint)):
            self.prediction_failed.emit(request_id, image_id, "")
            return
        try:
            if pixels is None:
                pixels = imageio.read_image(path, frame=None if frame < 0 else frame).pixels
            self._predictor.gate = not ungated
            with self._gate.proposing():
                prediction = self._predictor.predict(pixels, should_stop=self._more_urgent if prefetch else None)
            checkpoint = prediction.checkpoint or ""
            unsure = prediction.uncertainty
            if prediction.withheld:  # a model still learning (loaded since the GUI asked), or an image unlike
                self._withheld_by[image_id] = checkpoint
                self.prediction_withheld.emit(request_id, image_id, checkpoint, -1.0 if unsure is None else unsure)
                return
            learning = ungated and postprocess.withholds_image(self._predictor.postprocess, unsure)
            label = encoding.mask_to_label(prediction.classes, in_place=True)  # the classes are not used again
            self._cache(image_id, label, checkpoint, learning, prediction.uncertainty)
        except Cancelled:  # a click or the image on screen came first: this prefetch goes behind them
            self._given_way.add(request_id)
            self._again.emit(request_id, image_id, path, frame, prefetch, ungated, pixels)
            return
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
        self._scout_after = image_id  # the image on screen, or the one after it (prefetched)
        self._scout_later()

    def _cache(self, image_id: str, label: np.ndarray, checkpoint: str, learning: bool,
               unsure: float | None = None) -> bool:
        """Store the proposal with the checkpoint that made it (provenance), whether that model
        was still learning (shown on request) and how unsure it was; a failure is not fatal (False).
        Through the project's own writer, which touches no Project object: the GUI thread owns
        the open project."""
        try:
            write_proposal(self._proposals_dir, image_id, label, checkpoint, learning, unsure)
        except SegdeskError as exc:
            log.warning("proposal for %s not cached: %s", image_id, exc)
            return False
        return True

    # ----- scouting for "least sure first" (runs on this thread only)

    def _scout_later(self) -> None:
        """Plan scouting on a later turn of the event loop: reading project.json never stands
        between a request already queued and its answer."""
        self._scout_plan = True
        self._wake_scout()

    def _wake_scout(self) -> None:
        if not self._scout_woken:
            self._scout_woken = True
            self._scout.emit()

    def plan_scouting(self) -> None:
        """Queue the upcoming images not accepted that lack a score from the current model, when the
        project asks for "least sure first"."""
        self._scout_plan = False
        if self._predictor is None:
            return
        project = self._read_project()
        if project is None:
            self._scout_queue = []
            return
        if next_image.order_of(project) != next_image.UNCERTAIN:
            self._scout_queue = []
            return
        checkpoint = self._predictor.checkpoint
        after = self._scout_after if self._scout_after in {e.id for e in project.images} else None
        queue = []
        for image_id in next_image.upcoming(project, after)[:SCOUT_AHEAD]:
            if not self._has_score(image_id, checkpoint):
                entry = project.image(image_id)
                queue.append((image_id, str(project.source_path(entry)), -1 if entry.frame is None else entry.frame))
        self._scout_queue, self._scout_checkpoint = queue, checkpoint

    def _read_project(self) -> Project | None:
        """The project as saved, a reader's copy (the GUI thread owns the open one); read again only
        when project.json changed. None (logged) when it cannot be read."""
        root = self._proposals_dir.parent
        try:
            st = (root / PROJECT_FILE).stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._project_read is None or self._project_read[0] != key:
                self._project_read = (key, Project.open(root, clean=False))
        except (OSError, SegdeskError) as exc:
            log.warning("not scouting: %s", exc)
            return None
        return self._project_read[1]

    def _stored_by(self, image_id: str, checkpoint: str | None) -> dict | None:
        """The stored proposal's metadata when ``checkpoint`` made it, else None."""
        meta = read_proposal_meta(self._proposals_dir, image_id)
        return meta if meta and meta.get("checkpoint") == checkpoint else None

    def _has_score(self, image_id: str, checkpoint: str | None) -> bool:
        meta = self._stored_by(image_id, checkpoint)
        return meta is not None and meta.get("uncertainty") is not None

    def _score(self, image_id: str, path: str, frame: int) -> None:
        """Propose for one image (ungated: a model still learning is scored too) and store it with
        its uncertainty; a failure is logged, never raised: scouting is optional."""
        try:
            image = imageio.read_image(path, frame=None if frame < 0 else frame)
            self._predictor.gate = False
            prediction = self._predictor.predict(image.pixels, should_stop=self._more_urgent)
        except Cancelled:  # scored later, after what came first
            self._scout_queue.insert(0, (image_id, path, frame))
            return
        except SegdeskError as exc:
            log.info("not scored %s: %s", image_id, exc)
            return
        except Exception:  # noqa: BLE001 - e.g. out of memory
            log.exception("scoring %s failed", image_id)
            return
        checkpoint = prediction.checkpoint or ""
        unsure = prediction.uncertainty
        learning = postprocess.withholds_image(self._predictor.postprocess, unsure)
        label = encoding.mask_to_label(prediction.classes, in_place=True)
        if self._cache(image_id, label, checkpoint, learning, unsure):
            self.scored.emit(image_id, checkpoint, unsure)

    @Slot()
    def _scout_step(self) -> None:
        """Plan, or score one queued image; then queue the next step behind anything asked meanwhile."""
        self._scout_woken = False
        if self._predictor is None or QThread.currentThread().isInterruptionRequested():
            return
        if self._scout_plan or (self._scout_queue and self._predictor.checkpoint != self._scout_checkpoint):
            self.plan_scouting()  # asked for, or a new model: its own scores are wanted
        elif self._scout_queue:
            image_id, path, frame = self._scout_queue.pop(0)
            if not self._has_score(image_id, self._scout_checkpoint):  # a request may have scored it meanwhile
                self._score(image_id, path, frame)
        if self._scout_queue:
            self._wake_scout()

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
            self.model_loaded.emit(meta["id"], _device_text(predictor))
            return

    @Slot()
    def list_models(self) -> str:
        """Emit the checkpoint list (metadata only) and the pointer's id; return the id."""
        from segdesk.ml.checkpoints import CheckpointStore

        store = CheckpointStore(self._models_dir)
        current = store.current_id() or ""
        self.models_listed.emit(store.list(), current)
        return current
