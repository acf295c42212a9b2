"""Proposals: run a U-Net over a whole image of any size.

The image is normalised, resized to working resolution by the checkpoint's scale rule (one fixed
scale, or per image by its shorter side: planning.py), cut into overlapping tiles when it is larger
than one tile (tiling.py), and the tiles' softmax outputs are blended with a smooth window. The
probabilities (not the classes) are resized back to the image's own size before the argmax. An
image over STREAM_PIXELS goes a band of tiles at a time, with no whole-image float copies
(streaming.py); a click on one normalises only its window. Measured and not used
(docs/benchmarks.md, "Sharper edges and test-time flips"): a guided filter instead of the bilinear
resize, and test-time flip averaging (which, if it comes, must use only the flips of the
checkpoint's augmentation plan, or it would average a left lung with a right one).

Clicks: a click-aware checkpoint (``UNet.prompt_channels``) reads click maps and the previous mask
besides the image (segdesk.core.clicks); its automatic proposal gives it empty ones. ``Predictor.refine``
answers clicks on a window around them at working scale (``click_window``), so a click costs a
fraction of a whole proposal, and replaces only that window of the previous mask.

Engines: on the CPU, a checkpoint exported to ONNX (``0001.onnx``, written by the training worker)
runs through ONNX Runtime (onnx_engine.py, chosen by ``segdesk bench latency``); torch runs on
CUDA/MPS, for a checkpoint without an export, and when the export does not load or fails to run
(``Predictor.engine_note`` then says why). Only the logits of a batch of tiles differ between them.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from segdesk.core.clicks import (Click, click_room, disagrees, honour_clicks, keep_clicks, local_change,
                                 prompt_channels, prompt_maps)
from segdesk.core.errors import Cancelled, CheckpointError
from segdesk.core.memory import release_freed_memory
from segdesk.ml import onnx_engine, postprocess, streaming
from segdesk.ml.checkpoints import CheckpointStore
from segdesk.ml.click_refinement import fit_to_clicks, reach
from segdesk.ml.click_window import CLICK_REGION, click_window
from segdesk.ml.config import TrainConfig
from segdesk.ml.device import pick_device
from segdesk.ml.normalise import NORMALISATION, normalise_hwc
from segdesk.ml.planning import ScaleRule
from segdesk.ml.tiling import DEFAULT_TILE, OVERLAP, TILE_BATCH, autocast, predict_probabilities, window
from segdesk.ml.uncertainty import uncertainty
from segdesk.ml.unet import UNet

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "onnx")  # auto: ONNX Runtime on the CPU when the export loads, else torch
# Images with more pixels are predicted a band of tiles at a time (streaming.py), the rest whole
STREAM_PIXELS = 1 << 24
_STRIP_PIXELS = 1 << 24  # probability values resized to full size at a time when streaming


@dataclass
class Prediction:
    classes: np.ndarray  # uint8 H x W: 0 = background, 1..K = classes
    confidence: np.ndarray  # float32 H x W: the winning class's probability
    checkpoint: str | None  # which checkpoint made it (None: untrained weights)
    # the model's proposals cost more to correct than drawing, or this image is unlike those it was
    # judged on (postprocess.withholds_image)
    withheld: bool = False
    # refine: (y0, x0, y1, x1), the image pixels recomputed; ``confidence`` is then of that window only
    box: tuple[int, int, int, int] | None = None
    # uncertainty.py's number for the model's own classes (before post-processing); predict only
    uncertainty: float | None = None


def _first_line(exc: BaseException) -> str:
    """An engine error as one short line for the status bar (onnxruntime's messages run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


class _EngineFailed(Exception):
    """ONNX Runtime raised while computing logits (the Predictor falls back to torch)."""


def _stoppable(run: Callable[[torch.Tensor], torch.Tensor], should_stop: Callable[[], bool]):
    """``run`` that first asks ``should_stop`` and raises Cancelled when it says True; an engine
    failure while it says True is a run ended on purpose (``Predictor.interrupt``), also Cancelled."""
    def logits(batch: torch.Tensor) -> torch.Tensor:
        if should_stop():
            raise Cancelled
        try:
            return run(batch)
        except _EngineFailed:
            if should_stop():
                raise Cancelled from None
            raise
    return logits


class Predictor:
    """Holds one model in eval mode and turns images into proposals. Use from one thread."""

    def __init__(self, model: UNet, meta: dict, device: torch.device | str | None = None, tile: int = DEFAULT_TILE,
                 engine: str = "auto", onnx_path: str | Path | None = None):
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.meta = dict(meta)
        self.checkpoint: str | None = meta.get("id")
        self.scale_rule = ScaleRule.from_meta(meta)  # old checkpoints: their working_scale, fixed
        self.tile = int(tile)
        self.postprocess: dict | None = meta.get("postprocess")  # chosen on validation (postprocess.py)
        # False: return the model's masks even when the spec withholds proposals (batch prediction
        # asks for masks; the gate is about what a person must correct by hand)
        self.gate = True
        if meta.get("normalisation", NORMALISATION) != NORMALISATION:
            raise CheckpointError(f"Unknown input normalisation {meta.get('normalisation')!r}.")
        if engine not in ENGINES:
            raise ValueError(f"Unknown inference engine {engine!r}; choose one of {', '.join(ENGINES)}.")
        model = model.to(self.device).eval()
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.prompt_channels = int(getattr(model, "prompt_channels", 0))
        self.n_classes = int(getattr(model, "n_outputs", 1)) - 1
        self._working: tuple[object, object] | None = None  # (key, the input clicks are answered from)
        self.fit_clicks = True  # refine fits the network's answer to the clicks (click_refinement.py)
        self.honour_clicks = True  # refine tilts the model's answer toward each click near it (core/clicks.py)
        # from this many clicks on, a click changes only the region connected to it (core/clicks.local_change);
        # None: the model's whole answer on the window
        self.local_clicks_from: int | None = 1
        self.monotone_clicks = True  # a click only moves pixels its way (core/clicks.local_change)
        self._onnx: onnx_engine.OnnxEngine | None = None
        self._run_options = None  # ONNX Runtime's, while a stoppable prediction runs (``interrupt``)
        # why proposals run through torch although an ONNX export was asked for or exists (None: all
        # as planned); a message the caller may show as it is
        self.engine_note: str | None = None
        if engine != "torch":
            self._open_onnx(engine, onnx_path)

    def _open_onnx(self, engine: str, onnx_path: str | Path | None) -> None:
        strict = engine == "onnx"
        if self.device.type != "cpu":
            if strict:
                raise CheckpointError(f"The ONNX engine runs on the CPU, not on {self.device.type}.")
            return  # torch on CUDA/MPS is the fast path there
        if onnx_path is None or not Path(onnx_path).is_file():
            if strict:
                raise CheckpointError(f"Checkpoint {self.checkpoint} has no ONNX export.")
            log.info("checkpoint %s has no ONNX export; proposals run through torch", self.checkpoint)
            return
        if not onnx_engine.available():
            self._fall_back("onnxruntime is not installed or does not load", strict)
            return
        try:
            self._onnx = onnx_engine.OnnxEngine(onnx_path, self.meta.get("weights_sha256"))
        except CheckpointError as exc:
            self._fall_back(str(exc), strict)

    def _fall_back(self, reason: str, strict: bool = False) -> None:
        if strict:
            raise CheckpointError(reason)
        self._onnx = None
        self.engine_note = f"Proposals run through torch (slower): {reason.rstrip('.')}."
        log.warning("model %s: %s", self.checkpoint, self.engine_note)

    @property
    def engine(self) -> str:
        """The engine that computes the logits: "onnxruntime" or "torch"."""
        return onnx_engine.NAME if self._onnx is not None else "torch"

    @property
    def working_scale(self) -> float | None:
        """The fixed working scale; None under a per-image rule (``scale_rule``)."""
        return None if self.scale_rule.per_image else self.scale_rule.scale

    @property
    def accepts_clicks(self) -> bool:
        """Whether this checkpoint reads click prompts (older checkpoints and the bundled model do not)."""
        return self.prompt_channels > 0

    def area_factor(self, height: int, width: int) -> float:
        """For ``postprocess.apply`` on an image of this size: the post-processing's areas in its pixels."""
        return self.scale_rule.area_factor(height, width)

    @classmethod
    def from_checkpoint(
        cls, models_dir: str | Path, checkpoint_id: str | None = None, device: torch.device | str | None = None,
        engine: str = "auto",
    ) -> "Predictor":
        """A predictor for a checkpoint (default: the current one). CheckpointError if none loads.
        On the CPU it runs the checkpoint's ONNX export when there is one (``engine``: see ENGINES)."""
        store = CheckpointStore(models_dir)
        if checkpoint_id is None:
            found = store.load_current()
            if found is None:
                raise CheckpointError(f"There is no usable checkpoint in {models_dir} yet.")
            checkpoint_id, state_dict, meta = found
        else:
            state_dict, meta = store.load(checkpoint_id)
        meta = {**meta, "id": checkpoint_id}
        try:
            model = UNet.from_arch(meta["arch"])
            model.load_state_dict(state_dict)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"Checkpoint {checkpoint_id} does not fit its architecture: {exc}.") from exc
        return cls(model, meta, device, engine=engine, onnx_path=store.onnx_path(checkpoint_id))

    @classmethod
    def untrained(
        cls, n_classes: int, config: TrainConfig | None = None, device: torch.device | str | None = None
    ) -> "Predictor":
        """Fresh random weights (for timing, or before any checkpoint exists)."""
        config = config or TrainConfig()
        model = UNet(3, n_classes + 1, config.depth, config.base_width,
                     prompt_channels(n_classes) if config.clicks else 0)
        meta = {
            "id": None,
            "arch": model.arch_dict(),
            "normalisation": NORMALISATION,
            "working_scale": config.working_scale or 1.0,
        }
        return cls(model, meta, device)

    def interrupt(self) -> None:
        """From any thread: end the ONNX Runtime run of a stoppable ``predict`` now (its
        ``should_stop`` must then say True, so the prediction ends as Cancelled). Torch runs are
        stopped between batches of tiles only."""
        run = self._run_options
        if run is not None:
            run.terminate = True

    def _logits_of(self, run_options=None) -> Callable[[torch.Tensor], torch.Tensor] | None:
        engine = self._onnx
        if engine is None:
            return None

        def logits(batch: torch.Tensor) -> torch.Tensor:
            try:
                return engine.logits(batch, run_options)
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
                raise _EngineFailed(_first_line(exc)) from exc

        return logits

    def _working_input(self, pixels: np.ndarray) -> np.ndarray:
        """3 x h x w float32: the image normalised at working resolution."""
        image = self.scale_rule.resize(normalise_hwc(pixels))
        return np.ascontiguousarray(image.transpose(2, 0, 1))

    def _click_source(self, pixels: np.ndarray, key: object) -> streaming.NormalisedImage | streaming.WorkingSource:
        """The model input clicks are answered from, kept for the next click on the same ``key``: the
        whole normalised image, or for an image over STREAM_PIXELS one normalised a window at a time."""
        if key is not None and self._working is not None and self._working[0] == key:
            return self._working[1]
        if pixels.shape[0] * pixels.shape[1] > STREAM_PIXELS:
            source = streaming.WorkingSource(pixels, self.scale_rule)
        else:
            source = streaming.NormalisedImage(self._working_input(pixels))
        self._working = (key, source) if key is not None else None
        return source

    @contextlib.contextmanager
    def _stoppable_run(self, should_stop: Callable[[], bool] | None):
        """The ONNX run options ``interrupt`` can end while a stoppable prediction runs (None otherwise)."""
        if should_stop is None or self._onnx is None:
            yield None
            return
        self._run_options = self._onnx.run_options()
        try:
            yield self._run_options
        finally:
            self._run_options = None

    def _probabilities(self, x: torch.Tensor, tile: int, should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
        def run(logits_of: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
            if should_stop is not None:
                logits_of = _stoppable(logits_of or self.model, should_stop)
            return predict_probabilities(self.model, x, tile, logits_of=logits_of)

        with torch.inference_mode(), self._stoppable_run(should_stop) as options:
            try:
                return run(self._logits_of(options))
            except _EngineFailed as exc:  # the same input again, through torch, and torch from now on
                self._fall_back(f"ONNX Runtime failed on an image: {exc}")
                return run(None)

    def predict(self, pixels: np.ndarray, tile: int | None = None,
                should_stop: Callable[[], bool] | None = None) -> Prediction:
        """Classes and confidence for an image (H x W gray or H x W x 3 colour, any dtype).
        ``should_stop`` is asked before each batch of tiles; when it says True the proposal is given
        up (Cancelled)."""
        height, width = pixels.shape[:2]
        try:
            if height * width > STREAM_PIXELS:
                classes, unsure = self._streamed(pixels, tile or self.tile, should_stop)
                confidence = None
            else:
                x = torch.from_numpy(self._working_input(pixels))
                if self.prompt_channels:  # a click-aware model: no clicks, no previous mask
                    x = torch.cat([x, x.new_zeros((self.prompt_channels,) + tuple(x.shape[1:]))])
                probs = self._probabilities(x, tile or self.tile, should_stop)
                with torch.inference_mode():
                    if probs.shape[-2:] != (height, width):
                        probs = F.interpolate(probs[None], size=(height, width), mode="bilinear",
                                              align_corners=False)[0]
                    confidence, classes = probs.max(dim=0)
                    classes = classes.to(torch.uint8).cpu().numpy()
                    confidence = confidence.cpu().numpy().astype(np.float32, copy=False)
                unsure = uncertainty(classes, confidence)
        finally:
            if self._onnx is not None:  # its activations are not kept beside the next image
                self._onnx.release()
            # nor what glibc keeps of the freed arena chunks, tiles and bands (under 1 ms)
            release_freed_memory()
        classes = postprocess.apply(classes, self.postprocess, self.area_factor(height, width), gate=self.gate,
                                    unsure=unsure)
        withheld = self.gate and postprocess.withholds_image(self.postprocess, unsure)
        return Prediction(classes, confidence, self.checkpoint, withheld, uncertainty=unsure)

    def _streamed(self, pixels: np.ndarray, tile: int,
                  should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, float]:
        """Classes and uncertainty of a large image, a band of tiles at a time (streaming.py)."""
        source = streaming.WorkingSource(pixels, self.scale_rule)
        device = next(self.model.parameters()).device

        def run_all(logits_of: Callable[[torch.Tensor], torch.Tensor] | None) -> tuple[np.ndarray, float]:
            run = logits_of or self.model
            if should_stop is not None:
                run = _stoppable(run, should_stop)

            def forward(batch: torch.Tensor) -> torch.Tensor:
                if device.type == "cuda":
                    batch = batch.contiguous(memory_format=torch.channels_last)
                with autocast(device):
                    return run(batch)

            # one tile a pass on the CPU: a batch of four 512 px tiles holds ~0.6 GB more activations, no faster
            batch = TILE_BATCH if device.type == "cuda" else 1
            rows = streaming.working_rows(source, forward, self.prompt_channels, tile, batch, OVERLAP,
                                          lambda h, w: window(h, w, device), device)
            strips = streaming.full_size_rows(rows, source.size, pixels.shape[:2], _STRIP_PIXELS)
            return streaming.classes_of(strips, pixels.shape[:2])

        with torch.inference_mode(), self._stoppable_run(should_stop) as options:
            try:
                return run_all(self._logits_of(options))
            except _EngineFailed as exc:  # the same image again, through torch, and torch from now on
                self._fall_back(f"ONNX Runtime failed on an image: {exc}")
                return run_all(None)

    def _click_probabilities(self, x: torch.Tensor, tile: int, points: list[tuple[int, int]],
                             previous: np.ndarray | None) -> torch.Tensor:
        """The answer on a click window (image and prompt channels): the engine's, or with ``fit_clicks``
        the network's last features (from the export when it has them, else torch) fitted to the
        clicks (click_refinement.py) near each of ``points`` (window pixels; ``previous``: the window
        of the mask being corrected)."""
        if not self.fit_clicks:
            return self._probabilities(x, tile)
        features = None
        if self._onnx is not None and self._onnx.has_features:
            try:
                features = self._onnx.features(x.float()[None])
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types; torch from now on
                self._fall_back(f"ONNX Runtime failed on a click: {_first_line(exc)}")
        if features is None:
            with torch.no_grad():
                features = self.model.features(x.to(self.device, torch.float32)[None])
        shape = tuple(x.shape[-2:])
        # earlier clicks far from the last one can lie outside its window: they have no say here
        inside = [(py, px) for py, px in points if 0 <= py < shape[0] and 0 <= px < shape[1]]
        weight = reach(inside, [click_room(previous, p, shape) for p in inside], shape)
        return fit_to_clicks(features, self.model.head, x[-self.prompt_channels:], self.n_classes, weight).cpu()

    def refine(self, pixels: np.ndarray, clicks: list[Click], previous: np.ndarray | None,
               key: object = None) -> Prediction:
        """``previous`` (a class mask of the image's size; None = empty) corrected by ``clicks`` (image
        pixels): the model reads the clicks and the previous mask on a window around them
        (``click_window``), its answer is fitted to the clicks (``fit_clicks``) and replaces
        ``previous`` in the regions that changed next to the click (``local_clicks_from``; before
        that many clicks, on the whole window); every click's own pixel is as the click said. ``key``
        names the image so the next click reuses its working input. No post-processing and no gate:
        the user asked. ValueError for a checkpoint that does not read clicks (``accepts_clicks``)."""
        if not self.accepts_clicks:
            raise ValueError(f"Checkpoint {self.checkpoint} does not read clicks; train it with clicks first.")
        height, width = pixels.shape[:2]
        source = self._click_source(pixels, key)
        h, w = source.size
        sy, sx = h / height, w / width
        result = np.zeros((height, width), np.uint8) if previous is None else previous.astype(np.uint8, copy=True)
        if not clicks:
            return Prediction(result, np.ones((0, 0), np.float32), self.checkpoint, box=(0, 0, 0, 0))
        points = [(min(h - 1, int((c.y + 0.5) * sy)), min(w - 1, int((c.x + 0.5) * sx))) for c in clicks]
        # the window is chosen from the previous mask within CLICK_REGION of the clicks only: an object
        # reaching further makes the window its largest size, centred on the last click, either way
        ys, xs = [p[0] for p in points], [p[1] for p in points]
        ry0, ry1 = max(0, min(ys) - CLICK_REGION), min(h, max(ys) + 1 + CLICK_REGION)
        rx0, rx1 = max(0, min(xs) - CLICK_REGION), min(w, max(xs) + 1 + CLICK_REGION)
        region = None if previous is None else \
            streaming.nearest_crop(previous, (h, w), (ry0, rx0, ry1, rx1)).astype(np.uint8, copy=False)
        y0, x0, y1, x1 = click_window((ry1 - ry0, rx1 - rx0), [(py - ry0, px - rx0) for py, px in points], region,
                                      [c.class_number for c in clicks])
        window_previous = None if region is None else region[y0:y1, x0:x1]
        y0, x0, y1, x1 = y0 + ry0, x0 + rx0, y1 + ry0, x1 + rx0
        maps = prompt_maps(clicks, window_previous, self.n_classes, (y1 - y0, x1 - x0), (sy, sx), (y0, x0))
        x = torch.from_numpy(np.concatenate([source.rectangle(y0, y1, x0, x1), maps]))
        local = [(py - y0, px - x0) for py, px in points]
        probs = self._click_probabilities(x, max(y1 - y0, x1 - x0), local, window_previous)
        if self.honour_clicks:
            probs = torch.from_numpy(honour_clicks(probs.cpu().numpy(), local, clicks, window_previous))
        # the window in image pixels, and the probabilities resized onto it
        iy0, ix0 = int(round(y0 / sy)), int(round(x0 / sx))
        iy1, ix1 = min(height, int(round(y1 / sy))), min(width, int(round(x1 / sx)))
        with torch.inference_mode():
            if probs.shape[-2:] != (iy1 - iy0, ix1 - ix0):
                probs = F.interpolate(probs[None], size=(iy1 - iy0, ix1 - ix0), mode="bilinear",
                                      align_corners=False)[0]
            confidence, classes = probs.max(dim=0)
        answer = classes.to(torch.uint8).cpu().numpy()
        if self.local_clicks_from is not None and len(clicks) >= self.local_clicks_from:
            # the last click, and any earlier one the mask does not show yet (a superseded request)
            pending = [c for c in clicks[:-1] if disagrees(result, c)] + [clicks[-1]]
            answer = local_change(result[iy0:iy1, ix0:ix1], answer,
                                  [(int(round(c.y)) - iy0, int(round(c.x)) - ix0) for c in pending],
                                  pending if self.monotone_clicks else None)
        result[iy0:iy1, ix0:ix1] = answer
        return Prediction(keep_clicks(result, clicks), confidence.cpu().numpy(), self.checkpoint,
                          box=(iy0, ix0, iy1, ix1))
