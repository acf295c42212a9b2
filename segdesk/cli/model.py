"""Model commands: train (with its progress report and Ctrl-C handling) and predict. torch and
segdesk.ml are imported inside the functions, so importing this module stays light."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from segdesk.cli.common import EXIT_ERROR, EXIT_OK, fail, log, print_err
from segdesk.core import encoding, exchange, imageio
from segdesk.core.errors import SegdeskError
from segdesk.core.project import STATUS_ACCEPTED, Project, file_sha256

NO_MODEL = "no trained model yet: run segdesk train first"


def _check_device(requested: str | None) -> str | None:
    """Fail early, with ml's message, for a device that does not exist here."""
    from segdesk.ml.device import pick_device

    return str(pick_device(requested))


def _load_predictor(project: Project, device: str | None, checkpoint: str | None):
    from segdesk.ml import postprocess
    from segdesk.ml.checkpoints import CheckpointStore, check_compatible
    from segdesk.ml.inference import Predictor

    models = project.root / "models"
    if checkpoint is None and not CheckpointStore(models).list():
        raise fail(NO_MODEL)
    predictor = Predictor.from_checkpoint(models, checkpoint_id=checkpoint, device=device)
    check_compatible(predictor.meta, project.n_classes)  # e.g. trained before classes were added
    spec = predictor.postprocess
    # a batch run asked for masks: none is withheld, neither by a model still learning (the GUI shows
    # none of its proposals) nor on an image unlike its held-out ones (postprocess.unlike_held_out)
    predictor.gate = False
    if postprocess.withholds(spec):
        print_err(f"note: model {predictor.checkpoint} is still learning: {postprocess.why_withheld(spec)}. "
             f"Its masks are written anyway; check them.")
    return predictor


class _TrainReport:
    """Progress to stderr: a redrawn bar on a terminal, else one line per validation."""

    WIDTH = 24

    def __init__(self, stream, start_step: int, val_every: int,
                 max_steps: int | None, max_seconds: float | None):
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.start_step, self.val_every = start_step, val_every
        self.max_steps, self.max_seconds = max_steps, max_seconds
        self.start = time.monotonic()
        self.drawn = False

    def __call__(self, p) -> None:
        if self.tty:
            self._bar(p)
            return
        from segdesk.ml.train import IMPROVED, WAITING

        steps = p.step - self.start_step
        validated = p.state == IMPROVED or (steps > 0 and (steps % self.val_every == 0
                                                           or steps == self.max_steps))
        if p.state == WAITING:
            print(WAITING, file=self.stream, flush=True)
        elif validated:
            saved = f", saved checkpoint {p.checkpoint}" if p.state == IMPROVED else ""
            print(f"step {p.step}: loss {_fmt(p.loss)}, validation Dice {_fmt(p.val_dice)}{saved}",
                  file=self.stream, flush=True)

    def _bar(self, p) -> None:
        elapsed = time.monotonic() - self.start
        steps = p.step - self.start_step
        if self.max_steps:
            frac, where = steps / self.max_steps, f"step {steps}/{self.max_steps}"
        elif self.max_seconds:
            frac, where = elapsed / self.max_seconds, f"step {steps} {elapsed:.0f}/{self.max_seconds:.0f}s"
        else:
            frac, where = 0.0, f"step {steps} {elapsed:.0f}s"
        filled = int(self.WIDTH * min(max(frac, 0.0), 1.0))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        speed = f"  {p.images_per_s:.1f} img/s" if p.images_per_s else ""
        line = f"\r[{bar}] {where}  loss {_fmt(p.loss)}  Dice {_fmt(p.val_dice)}{speed}"
        self.stream.write(line.ljust(79))
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _fmt(value) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


class _StopOnInterrupt:
    """First Ctrl-C (or SIGTERM, as a service manager sends) asks the trainer to stop after its
    current step; a second one aborts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print_err("stopping after this step (Ctrl-C again to abort)")

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        return False


def cmd_pretrain(args) -> int:
    from segdesk.ml.config import TrainConfig
    from segdesk.ml.train import Trainer

    project = Project.open(args.project, clean=False)
    device = _check_device(args.device)
    project.clean_models()  # this process holds the models lock: leftovers are a crash's
    if not project.images:
        raise fail(f"{project.root} has no images to learn from: segdesk add them first")
    trainer = Trainer(project.root, TrainConfig(), device=device, init="current")
    start = trainer.pretrained_steps
    if args.steps is not None and start >= args.steps:
        print(f"already pretrained {start} steps")
        return EXIT_OK
    if not project.accepted_ids():
        print_err("no labels yet: crops are taken at random scales; accept or import one label first and "
                  "pretraining learns at the scale it plans, which helped three times as much (docs/benchmarks.md)")
    every = 50

    def report(step: int, loss: float) -> None:
        if step % every == 0:
            print_err(f"step {step}: restoration loss {loss:.4f}")

    with _StopOnInterrupt() as stop:
        try:
            steps = trainer.pretrain(max_steps=args.steps, max_seconds=None if args.minutes is None else args.minutes * 60,
                                     should_stop=lambda: stop.requested, on_step=report)
        except SegdeskError as exc:
            raise fail(str(exc)) from exc
    print(f"pretrained {steps - start} steps ({steps} in all) on {len(project.images)} images; "
          "training starts from them")
    return EXIT_OK


def cmd_train(args) -> int:
    project = Project.open(args.project, clean=False)  # the labels are the app's to clean
    if args.heartbeat is not None and not args.follow:
        raise fail("--heartbeat goes with --follow")
    from segdesk.ml import distributed

    group = distributed.start(args.device)  # under torchrun: one process per GPU (or CPU rank)
    device = group.device if group.size > 1 else _check_device(args.device)
    if group.is_main:
        project.clean_models()  # this process holds the models lock: leftovers are a crash's
    finished = False
    try:
        code = _train(args, project, device, group)
        finished = True
        return code
    finally:
        group.close(finished)


def _train(args, project: Project, device: str, group) -> int:
    from segdesk.ml.config import TrainConfig
    from segdesk.ml.train import Trainer

    overrides = {k: v for k, v in (("crop_size", args.crop), ("batch_size", args.batch),
                                   ("lr", args.lr), ("base_width", args.base_width),
                                   ("depth", args.depth), ("val_every", args.val_every),
                                   ("augmentation", args.augment), ("precision", args.precision))
                 if v is not None}
    try:
        config = TrainConfig(**overrides)
    except (TypeError, ValueError) as exc:
        raise fail(f"invalid training option: {exc}") from exc
    trainer = Trainer(project.root, config, device=device,
                      init=None if args.from_scratch else "current", group=group)
    if not trainer.has_data and not args.follow:
        raise fail("no labels to train on yet: accept or correct some images, "
                    "or run segdesk import-labels first")
    parent = trainer.parent
    max_seconds = args.minutes * 60 if args.minutes is not None else None
    report = _TrainReport(sys.stderr if group.is_main else _Silent(), trainer.progress("training").step,
                          config.val_every, args.steps, max_seconds)
    log.info("training %s on %s from %s with %s%s", project.name, device, parent or "fresh weights", config,
             f" ({group.describe()})" if group.size > 1 else "")
    with _StopOnInterrupt() as stop:
        try:
            if args.follow:
                result = _follow(args, trainer, report, stop, group)
            else:
                result = trainer.run(max_steps=args.steps, max_seconds=max_seconds,
                                     on_progress=report, should_stop=lambda: stop.requested)
        finally:
            report.close()
    if not group.is_main:
        return EXIT_OK
    steps = result.step - report.start_step
    if result.checkpoint is None:
        print(f"trained {steps} steps; no checkpoint saved yet (validation Dice {_fmt(result.val_dice)})")
        return EXIT_OK
    from segdesk.ml.checkpoints import CheckpointStore

    meta = next((m for m in CheckpointStore(project.root / "models").list()
                 if m["id"] == result.checkpoint), {})
    dice, per_class = meta.get("val_dice"), meta.get("val_dice_per_class")
    if "val_dice" not in meta:
        dice, per_class = result.val_dice, result.val_dice_per_class
    unchanged = " (no improvement, unchanged)" if result.checkpoint == parent else ""
    print(f"trained {steps} steps; checkpoint {result.checkpoint}{unchanged}; "
          f"validation Dice {_fmt(dice)}")
    if per_class:
        print("  " + ", ".join(f"{c.name} {_fmt(v)}" for c, v in zip(project.classes, per_class)))
    print(f"  augmentation: {trainer.augmentation.describe()}; resolution: {trainer.scale_rule.describe()}")
    return EXIT_OK


class _Silent:
    """Where ranks other than 0 report to: nowhere."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def _follow(args, trainer, report, stop, group):
    """``train --follow``: a heartbeat for the app, then train and wait for labels until stopped."""
    from segdesk.core import trainer_presence
    from segdesk.ml.device import device_name
    from segdesk.ml.follow import Heartbeat, follow

    if not group.is_main:
        return follow(trainer, lambda: stop.requested, report)
    every = args.heartbeat or trainer_presence.BEAT_S
    beat = Heartbeat(trainer.root, device_name(trainer.device) + group.describe_suffix(), every).start()
    print_err(f"following {trainer.root}: training as labels arrive (Ctrl-C to stop)")

    def on_progress(p) -> None:
        beat.update(p)
        report(p)

    try:
        return follow(trainer, lambda: stop.requested, on_progress)
    finally:
        beat.stop()


def _expand_files(paths: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    files, skipped = [], []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*")
                            if f.is_file() and f.suffix.lower() in imageio.SUPPORTED_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            skipped.append((str(p), "no such file or folder"))
    return files, skipped


def cmd_predict(args) -> int:
    project = Project.open(args.project)
    if args.files and not args.out:
        raise fail("--out DIR is required when predicting FILES")
    device = _check_device(args.device)
    out = exchange.prepare_out_dir(args.out) if args.out else None
    predictor = _load_predictor(project, device, args.checkpoint)
    if args.files:
        return _predict_files(predictor, args.files, out)
    names = exchange.export_names(project.images)
    todo = [e for e in project.images if e.status != STATUS_ACCEPTED]
    if not todo:
        print(f"nothing to propose: all {len(project.images)} images of the project are accepted "
              f"(other images: segdesk predict PROJECT --out DIR FILES)")
        return EXIT_OK
    done, skipped = 0, []
    for entry in todo:
        try:
            image = project.read_image(entry)
        except SegdeskError as exc:
            skipped.append((entry.source, str(exc)))
            continue
        pred = predictor.predict(image.pixels)
        project.save_proposal(entry.id, encoding.mask_to_label(pred.classes), pred.checkpoint)
        if out is not None:
            exchange.write_mask(out / names[entry.id], pred.classes)
        done += 1
        log.debug("proposal for %s", entry.id)
    for path, reason in skipped:
        print_err(f"skipped {path}: {reason}")
    where = f"; masks in {out}" if out is not None else ""
    print(f"stored {done} proposal{'s' if done != 1 else ''} from checkpoint {predictor.checkpoint}{where}"
          + (f", skipped {len(skipped)}" if skipped else ""))
    return EXIT_ERROR if skipped else EXIT_OK


def _predict_files(predictor, paths: Sequence[str], out: Path) -> int:
    files, skipped = _expand_files(paths)
    stems = [f.stem.lower() for f in files]
    done, written = 0, set()
    for f in files:
        try:
            image = imageio.read_image(f)
        except SegdeskError as exc:
            skipped.append((str(f), str(exc)))
            continue
        name = f.stem
        if stems.count(name.lower()) > 1:  # same stem in different folders: add the content hash
            name = f"{name}-{file_sha256(f)[:8]}"
        if name.lower() in written:
            skipped.append((str(f), "same content as another file given"))
            continue
        pred = predictor.predict(image.pixels)
        exchange.write_mask(out / (name + exchange.MASK_SUFFIX), pred.classes)
        written.add(name.lower())
        done += 1
    for path, reason in skipped:
        print_err(f"skipped {path}: {reason}")
    print(f"wrote {done} mask{'s' if done != 1 else ''} to {out} from checkpoint {predictor.checkpoint}"
          + (f", skipped {len(skipped)}" if skipped else ""))
    return EXIT_ERROR if skipped else EXIT_OK
