"""The training loop behind the "learns while you label" promise.

One Trainer owns one model and optimizer and reads labels only from disk. It keeps a checkpoint
only when validation Dice improves on the held-out accepted images (with no held-out images yet:
when the smoothed training loss dropped by more than 5% since the last checkpoint). Everything runs
in the caller's thread; ``run`` checks for a stop after every step. Its waits (for labels, for a
running proposal) go through one TrainingGate (segdesk.ml.gate) that other threads announce to.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from segdesk.core.clicks import prompt_channels
from segdesk.core.errors import CheckpointError, SegdeskError
from segdesk.core.project import Project
from segdesk.ml import postprocess, precision, pretrain, validation
from segdesk.ml.augment_plan import AugmentationPlan, plan_for
from segdesk.ml.checkpoints import CheckpointStore, check_compatible, count_in_meta
from segdesk.ml.click_training import simulate_prompts
from segdesk.ml.config import TrainConfig
from segdesk.ml.data import LabelledSet, label_signature
from segdesk.ml.device import device_name, pick_device
from segdesk.ml.distributed import Group
from segdesk.ml.gate import TrainingGate
from segdesk.ml.losses import masked_ce_dice
from segdesk.ml.normalise import NORMALISATION
from segdesk.ml.planning import ScaleRule, keep_or_replace, plan_scale_rule, read_fingerprints, scale_setting
from segdesk.ml.states import ERROR, IMPROVED, STOPPED, TRAINING, WAITING, Progress  # noqa: F401 (re-exported)
from segdesk.ml.unet import UNet
from segdesk.ml.weight_average import WeightAverage

log = logging.getLogger(__name__)


LOSS_IMPROVEMENT = 0.05  # without validation images: a checkpoint per 5% drop of smoothed loss
_LOSS_SMOOTHING = 0.9  # exponential moving average factor
_PROGRESS_EVERY = 5  # steps between on_progress calls (besides validations)
_GRAD_CLIP = 12.0  # as nnU-Net
_LABEL_CHECK_S = 0.5  # while waiting: how often to re-read labels nobody announced (another process's)
MAX_YIELD_S = 10.0  # a stuck proposal never pauses training for longer
# A model trained on more labelled images than the kept checkpoint replaces it unless its validation
# Dice is lower by more than this: on a few held-out images the kept best is partly luck, and
# holding on to it froze proposals for ten images (docs/benchmarks.md, "Click prompts")
KEEP_SLACK = 0.03


class Trainer:
    """Trains the project's U-Net from its saved labels. Use from one thread."""

    def __init__(
        self,
        project_root: str | Path,
        config: TrainConfig | None = None,
        device: torch.device | str | None = None,
        init: str | None = "current",
        gate: TrainingGate | None = None,
        group: Group | None = None,
    ):
        """``gate``: shared with the threads that announce labels, stop training or propose.
        ``group``: the torchrun processes training together (segdesk.ml.distributed); each
        samples its own crops, and rank 0 alone validates and writes checkpoints."""
        self.root = Path(project_root)
        self.gate = gate or TrainingGate()
        self.group = group or Group()
        self.config = config or TrainConfig()
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.precision = precision.training_precision(self.config.precision, self.device)
        log.info("training on %s in %s", device_name(self.device), self.precision)
        self.store = CheckpointStore(self.root / "models")
        self.rng = np.random.default_rng([self.config.seed, self.group.rank])
        torch.manual_seed(self.config.seed)  # the same initial weights on every rank

        self.project = Project.open(self.root, clean=False)
        self._signature = label_signature(self.project)
        self._fingerprints: dict = {}  # label fingerprints for planning, by (image id, label file time)
        self._planned_rule: ScaleRule | None = None  # planned from labels; kept while re-plans agree
        self.data = self._make_set()

        self.step_count = 0  # steps taken by this trainer
        self._base_step = 0  # steps behind the checkpoint it started from
        self.parent: str | None = None
        self.last_checkpoint: str | None = None
        self._build_model(init)

        self.best_dice: float | None = None
        self._baseline_pending = self.parent is not None  # validate the loaded weights before judging
        self._loss_at_checkpoint: float | None = None
        self.smoothed_loss: float | None = None
        self.images_per_s = 0.0
        self.bad_validations = 0
        self.last_val: tuple[float | None, list[float | None] | None] = (None, None)
        self._held_out = validation.Validation()  # the last validation's, until a checkpoint uses it

    # ----- set-up

    def _choose_scale_rule(self) -> ScaleRule:
        """Config, else the project's setting, else planned from the accepted labels and kept while
        re-plans agree with it (planning.keep_or_replace)."""
        if self.config.working_scale is not None:
            return ScaleRule(float(self.config.working_scale))
        planned = plan_scale_rule(self.project, self.config.crop_size, self._fingerprints)
        if scale_setting(self.project) is not None or not self.project.accepted_ids():
            return planned
        self._planned_rule = keep_or_replace(self._planned_rule, planned)
        return self._planned_rule

    def _choose_augmentation(self) -> AugmentationPlan:
        """Planned afresh from the labels (it costs no cache), then the setting, then the config."""
        fingerprints = read_fingerprints(self.project, self._fingerprints)
        classes = [c.name for c in self.project.classes]
        return plan_for(fingerprints, classes, self.project.settings, self.config.augmentation)

    def _make_set(self, previous: LabelledSet | None = None) -> LabelledSet:
        data = LabelledSet(self.project, self.config.crop_size, self._choose_scale_rule(),
                           augmentation=self._choose_augmentation())
        if previous is None or data.scale_rule != previous.scale_rule:
            log.info("working resolution: %s", data.scale_rule.describe())
        if previous is None or data.augmentation != previous.augmentation:
            log.info("augmentation: %s", data.augmentation.describe())
        if previous is not None:
            data.adopt_cache(previous)
        return data

    @property
    def scale_rule(self) -> ScaleRule:
        return self.data.scale_rule

    @property
    def working_scale(self) -> float | None:
        """The fixed working scale; None under a per-image rule (``scale_rule``)."""
        return self.data.working_scale

    @property
    def augmentation(self) -> AugmentationPlan:
        return self.data.augmentation

    @property
    def n_classes(self) -> int:
        return self.project.n_classes

    @property
    def has_data(self) -> bool:
        return self.data.has_data

    def _build_model(self, init: str | None) -> None:
        model = None
        self._train_images_at_checkpoint = 0
        self.pretrained_steps = 0  # of learning from the images alone behind these weights (pretrain.py)
        if init == "current":
            found = self.store.load_current()
            if found is not None:
                checkpoint_id, state_dict, meta = found
                try:
                    check_compatible(meta, self.n_classes)
                    model = UNet.from_arch(meta["arch"])
                    model.load_state_dict(state_dict)
                except (CheckpointError, KeyError, ValueError, RuntimeError) as exc:
                    log.warning("starting from fresh weights: checkpoint %s does not fit: %s", checkpoint_id, exc)
                    model = None
                else:
                    self.parent = self.last_checkpoint = checkpoint_id
                    self._base_step = count_in_meta(meta, "step")
                    self._train_images_at_checkpoint = count_in_meta(meta, "n_train_images")
                    self.pretrained_steps = count_in_meta(meta, "pretrained_steps")
                    log.info("continuing from checkpoint %s", checkpoint_id)
        elif init is not None:
            raise ValueError(f"init must be 'current' or None, not {init!r}.")
        if model is None:
            model = UNet(3, self.n_classes + 1, self.config.depth, self.config.base_width)
            self.pretrained_steps = pretrain.load_pretrained(self.store.dir, model)
        if self.config.clicks:  # a checkpoint from before clicks learns to read them from here on
            model = model.with_prompts(prompt_channels(self.n_classes))
        model = model.to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._trained_model = self.group.wrap(model)  # DDP under torchrun; checkpoints hold ``average``
        self.average = WeightAverage(model, self.config.weight_average)  # judged, kept and exported
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )

    # ----- learning from the images alone (pretrain.py)

    def pretrain(self, max_steps: int | None = None, max_seconds: float | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_step: Callable[[int, float], None] | None = None) -> int:
        """Pretrain on the project's images (no labels needed) until ``max_steps`` steps in all,
        ``max_seconds`` or a stop; then start from the result. Returns the pretraining's steps in
        all. Only before supervised training: SegdeskError once this model has learnt from labels."""
        if self.parent is not None or self.step_count:
            raise SegdeskError("This project's model has already learnt from labels; pretraining is for "
                               "a new project's model (delete models/ to start again from the images).")
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        images = pretrain.ProjectImages(self.project, self.scale_rule if self.project.accepted_ids() else None)

        def stop() -> bool:
            return (self.gate.stopped or (should_stop is not None and should_stop())
                    or (deadline is not None and time.monotonic() >= deadline))

        steps = pretrain.pretrain(self.model, images, self.store.dir, self.pretrained_steps, max_steps, self.device,
                                  self.precision, self.config, stop, on_step)
        self._build_model(init=None)  # the pretrained weights, with a fresh optimizer and weight average
        return steps

    # ----- labels

    def refresh_labels(self) -> bool:
        """Re-read project.json and the label files; True (and patience restarted) when labels, the
        classes, or the working-scale or augmentation setting changed. A changed class count restarts
        from fresh weights."""
        try:
            project = Project.open(self.root, clean=False)
        except SegdeskError as exc:
            log.warning("could not re-read the project: %s", exc)
            return False
        signature = label_signature(project)
        classes_changed = [c.name for c in project.classes] != [c.name for c in self.project.classes]
        settings_changed = any(project.settings.get(k) != self.project.settings.get(k)
                               for k in ("working_scale", "augmentation"))
        if signature == self._signature and not classes_changed and not settings_changed:
            return False
        n_before = self.project.n_classes
        self.project = project
        self._signature = signature
        old_validation = self.data.validation_key
        self.data = self._make_set(previous=self.data)
        if project.n_classes != n_before:
            log.warning("the project now has %d classes (was %d): training a new model", project.n_classes, n_before)
            self.parent = None
            self._base_step = 0
            self._build_model(init=None)
            self.best_dice = None
            self._loss_at_checkpoint = None
            self.smoothed_loss = None
        if self.data.validation_key != old_validation:
            # the old best was measured on other images: the next validation sets a new reference
            self.best_dice = None
            self._baseline_pending = False
        self.bad_validations = 0
        log.info(
            "labels changed: %d training, %d validation images, %d with a part held out",
            self.data.n_train_images, len(self.data.validation_ids), len(self.data.part_ids),
        )
        return True

    # ----- one step, one validation

    def step(self) -> float:
        """One optimisation step on a random batch; returns its loss. Without data: does nothing
        and returns 0.0 (check ``has_data``)."""
        if not self.data.has_data:
            return 0.0
        start = time.perf_counter()
        try:
            samples = [self.data.sample(self.rng) for _ in range(self.config.batch_size)]
        except SegdeskError as exc:  # the last readable labelled image went away
            log.warning("%s", exc)
            return 0.0
        images = torch.stack([s[0] for s in samples]).to(self.device, non_blocking=True)
        targets = torch.stack([s[1] for s in samples]).to(self.device, non_blocking=True)
        self.model.train()
        if self.model.prompt_channels:
            with precision.autocast(self.device, self.precision):
                prompts = simulate_prompts(self.model, images, targets, self.n_classes, self.rng,
                                           self.config.click_share)
            images = torch.cat([images, prompts], dim=1)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with precision.autocast(self.device, self.precision):
            logits = self._trained_model(images)
        loss = masked_ce_dice(logits.float(), targets, self.config.dice_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), _GRAD_CLIP)
        self.optimizer.step()
        self.average.update()
        value = float(loss.detach())
        self.step_count += 1
        elapsed = time.perf_counter() - start
        rate = self.config.batch_size / max(elapsed, 1e-9)
        self.images_per_s = rate if self.images_per_s == 0 else 0.8 * self.images_per_s + 0.2 * rate
        if math.isfinite(value):
            s = self.smoothed_loss
            self.smoothed_loss = value if s is None else _LOSS_SMOOTHING * s + (1 - _LOSS_SMOOTHING) * value
        return value

    def validate(self) -> tuple[float | None, list[float | None] | None]:
        """(mean Dice, per-class Dice) of the weight average on the held-out images (validation.py);
        keeps its predictions for choosing post-processing."""
        self._held_out = validation.validate(self.average.model, self.data.validation_items(), self.n_classes)
        return self._held_out.dice, self._held_out.per_class

    def save_checkpoint(self, val_dice: float | None, per_class: list[float | None] | None) -> str:
        meta = {
            "arch": self.model.arch_dict(),
            "classes": [c.name for c in self.project.classes],
            "normalisation": NORMALISATION,
            "working_scale": self.working_scale,  # before scale rules; None under a per-image rule
            "scale_rule": self.scale_rule.to_meta(),
            "augmentation": self.augmentation.to_meta(),
            "prompts": "clicks" if self.model.prompt_channels else None,  # which kind of model
            "crop_size": self.config.crop_size,
            "n_train_images": self.data.n_train_images,
            "n_val_images": len(self.data.validation_ids),
            "n_val_parts": len(self.data.part_ids),  # images with only a part held out (data.py)
            "val_dice": val_dice,
            "val_dice_per_class": per_class,
            "train_loss": self.smoothed_loss,
            "step": self._base_step + self.step_count,
            "device": device_name(self.device) + self.group.describe_suffix(),
            "precision": self.precision,  # of training; judged and exported in fp32 (precision.py)
            "host": socket.gethostname(),
            "parent": self.parent,
            "pretrained_steps": self.pretrained_steps,
            "torch": torch.__version__,
            "postprocess": self._choose_postprocess(),
        }
        # onnx_model: exported beside it for fast CPU proposals (export_onnx.py); failure only logs
        kept = self.average.model
        checkpoint_id = self.store.save(kept.state_dict(), meta, onnx_model=kept)
        self.last_checkpoint = checkpoint_id
        self._train_images_at_checkpoint = self.data.n_train_images
        self._loss_at_checkpoint = self.smoothed_loss
        self.project.log_event(
            "checkpoint", id=checkpoint_id, step=meta["step"], val_dice=val_dice, train_loss=self.smoothed_loss
        )
        return checkpoint_id

    def _choose_postprocess(self) -> dict | None:
        """Post-processing and the show-or-withhold decision for the checkpoint about to be saved,
        from its predictions on the held-out images (segdesk.ml.postprocess); the Predictor applies
        it. A failure here costs the checkpoint its post-processing, never the checkpoint."""
        held_out, self._held_out = self._held_out, validation.Validation()
        if not held_out.pairs:
            return postprocess.unvalidated(1)  # a part of the first accepted image is held out
        try:
            return postprocess.choose(held_out.pairs, self.n_classes, area_scale=self.scale_rule.stored_area_scale,
                                      uncertainties=held_out.uncertainties)
        except Exception:  # noqa: BLE001 - e.g. OpenCV on an odd array; proposals stay as they are
            log.exception("choosing post-processing failed")
            return None

    def _validate_and_keep(self) -> bool:
        """Validate; write a checkpoint if the model improved. Returns whether it did (rank 0
        decides for every rank)."""
        if self.group.is_main:
            return self.group.from_main(self._judge())
        improved = self.group.from_main(False)
        self.bad_validations = 0 if improved else self.bad_validations + 1
        return improved

    def _judge(self) -> bool:
        dice, per_class = self.validate()
        self.last_val = (dice, per_class)
        if dice is not None:
            more_labels = self.data.n_train_images > self._train_images_at_checkpoint
            improved = (self.best_dice is None or dice > self.best_dice + 1e-4
                        or (more_labels and dice >= self.best_dice - KEEP_SLACK))
            if improved:
                self.best_dice = dice
        else:
            loss = self.smoothed_loss
            reference = self._loss_at_checkpoint
            improved = loss is not None and (reference is None or loss < (1 - LOSS_IMPROVEMENT) * reference)
        if improved:
            self.save_checkpoint(dice, per_class)
            self.bad_validations = 0
        else:
            self.bad_validations += 1
        log.debug("step %d: val Dice %s, loss %s, improved %s", self.step_count, dice, self.smoothed_loss, improved)
        return improved

    def progress(self, state: str) -> Progress:
        dice, per_class = self.last_val
        loss = self.smoothed_loss if self.smoothed_loss is not None else float("nan")
        return Progress(
            self._base_step + self.step_count, loss, dice, per_class, self.images_per_s, self.last_checkpoint,
            state, self.augmentation.describe(), self.scale_rule.describe(), self.precision,
        )

    # ----- the loop

    def wait_for_labels(self, timeout: float | None = None, should_stop: Callable[[], bool] | None = None) -> bool:
        """Wait on the gate until labels changed (True), or a stop or the timeout (False). Announced
        labels and the gate's stop wake it at once; labels written by another process, and
        ``should_stop``, are looked at every _LABEL_CHECK_S."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.gate.stopped and not (should_stop is not None and should_stop()):
            remaining = _LABEL_CHECK_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.gate.wait_for_labels(min(remaining, _LABEL_CHECK_S))
            if self.refresh_labels():
                return True
        return False

    def run(
        self,
        max_steps: int | None = None,
        max_seconds: float | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Progress:
        """Train until the gate's stop, should_stop(), max_steps, max_seconds or (open-ended runs
        only) patience runs out. Before every step a running proposal gets the device (DESIGN.md
        "Threads"). Validates every ``val_every`` steps and at the end; returns the final Progress."""
        report = on_progress or (lambda p: None)

        def stop() -> bool:
            self.gate.wait_while_proposing(MAX_YIELD_S)
            return self.group.any(self.gate.stopped or (should_stop is not None and should_stop()))

        open_ended = max_steps is None and max_seconds is None
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        steps_here = 0
        try:
            while True:
                if stop() or (max_steps is not None and steps_here >= max_steps):
                    return self.progress(STOPPED)
                if not self.has_data:
                    report(self.progress(WAITING))
                    if max_seconds is None and max_steps is not None:
                        return self.progress(WAITING)  # a step budget cannot be spent waiting
                    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if not self.wait_for_labels(remaining, should_stop):
                        return self.progress(STOPPED if stop() else WAITING)
                    continue
                if self._baseline_pending:
                    self._baseline_pending = False
                    if self.data.has_validation and self.group.is_main:
                        self.best_dice, _ = self.validate()  # the loaded weights are the bar to beat

                self.step()
                if not self.has_data:  # every labelled image turned out unreadable
                    continue
                steps_here += 1
                if stop():
                    return self.progress(STOPPED)
                out_of_budget = (max_steps is not None and steps_here >= max_steps) or self.group.any(
                    deadline is not None and time.monotonic() >= deadline
                )
                if steps_here % self.config.val_every == 0 or out_of_budget:
                    improved = self._validate_and_keep()
                    report(self.progress(IMPROVED if improved else TRAINING))
                    if out_of_budget:
                        return self.progress(STOPPED)
                    if steps_here % self.config.val_every == 0:
                        self.refresh_labels()
                    if open_ended and self.bad_validations >= self.config.patience:
                        log.info("no improvement in %d validations: training paused", self.bad_validations)
                        return self.progress(STOPPED)
                elif steps_here % _PROGRESS_EVERY == 0:
                    report(self.progress(TRAINING))
        except Exception:
            report(self.progress(ERROR))
            raise
