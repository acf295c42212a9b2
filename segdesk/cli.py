"""Headless commands on core + ml: segdesk new | add | import-labels | train | predict | export | info |
bench | demo.

Results go to stdout, progress and skipped-file reasons to stderr, diagnostics through ``logging``
(``-v`` for debug). A user error (bad input, missing project, unknown device, ...) ends the command
with exit status 1 and one line ``segdesk: error: <message>`` on stderr, never a traceback; a bad
command line exits with 2. torch is imported only by the commands that need it, Qt only by ``open``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from segdesk import __version__
from segdesk.argtypes import positive_float as _positive_float
from segdesk.argtypes import positive_int as _positive_int
from segdesk.core import exchange, imageio
from segdesk.core.errors import SegdeskError
from segdesk.core.project import (DEFAULT_COLOURS, STATUS_ACCEPTED, STATUS_IN_PROGRESS, STATUS_NEW,
                                  STATUSES, LabelClass, Project, file_sha256)

log = logging.getLogger("segdesk.cli")

PROG = "segdesk"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

NO_MODEL = "no trained model yet: run segdesk train first"


class _UsageError(Exception):
    """A bad command line; argparse's message, shown on one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message, and no SystemExit
        raise _UsageError(f"{message} (see {self.prog} --help)")


# ----- small helpers


def _fail(message: str) -> SegdeskError:
    return SegdeskError(message)


def _err(line: str) -> None:
    print(line, file=sys.stderr)


def _parse_classes(text: str) -> list[LabelClass]:
    """'lung,heart' or 'lung:#ff0000,heart' -> classes, default colours where none is given."""
    classes = []
    for i, item in enumerate(text.split(",")):
        name, _, colour = item.partition(":")
        name = name.strip()
        if not name:
            raise _fail(f"empty class name in {text!r}; give names separated by commas, e.g. lung,heart")
        classes.append(LabelClass(name, colour.strip() or DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)]))
    return classes


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
        raise _fail(NO_MODEL)
    predictor = Predictor.from_checkpoint(models, checkpoint_id=checkpoint, device=device)
    check_compatible(predictor.meta, project.n_classes)  # e.g. trained before classes were added
    spec = predictor.postprocess
    if postprocess.withholds(spec):  # the GUI shows none of its proposals; a batch run asked for masks
        predictor.gate = False
        ratio = spec.get("val_effort_ratio")
        cost = f" ({ratio:.1f}x)" if isinstance(ratio, (int, float)) else ""
        _err(f"note: model {predictor.checkpoint} is still learning: on the held-out accepted images its "
             f"masks took more correcting than drawing{cost}. Its masks are written anyway; check them.")
    return predictor


# ----- commands


def cmd_new(args) -> int:
    project = Project.create(args.project, _parse_classes(args.classes))
    print(f"created project {project.name} at {project.root} with classes "
          + ", ".join(c.name for c in project.classes))
    return EXIT_OK


def cmd_add(args) -> int:
    project = Project.open(args.project)
    report = project.add_images(args.paths)
    for path, reason in report.skipped:
        _err(f"skipped {path}: {reason}")
    print(f"added {len(report.added)} image{'s' if len(report.added) != 1 else ''}"
          + (f", skipped {len(report.skipped)}" if report.skipped else ""))
    return EXIT_OK


def cmd_import_labels(args) -> int:
    project = Project.open(args.project)
    masks = exchange.list_masks(args.mask_dir)
    if not masks:
        raise _fail(f"no PNG masks in {args.mask_dir}")
    match = exchange.match_masks(masks, project.images)
    skipped = list(match.skipped)
    imported = unchanged = invalid = 0
    for path, entry in match.matched:
        try:
            mask = exchange.read_mask(path, entry.shape, project.n_classes)
        except SegdeskError as exc:
            skipped.append((path, str(exc)))
            invalid += 1
            continue
        label = exchange.mask_to_label(mask)
        if entry.status != STATUS_NEW and not args.overwrite:
            current = project.read_label(entry.id) if entry.status == STATUS_ACCEPTED else None
            if current is not None and (current == label).all():
                unchanged += 1
            else:
                skipped.append((path, f"image {entry.id} is already {entry.status}; "
                                      "--overwrite replaces its label"))
            continue
        project.accept(entry.id, label)
        imported += 1
    for path, reason in skipped:
        _err(f"skipped {path}: {reason}")
    parts = [f"imported {imported} mask{'s' if imported != 1 else ''} as accepted labels"]
    if unchanged:
        parts.append(f"{unchanged} unchanged")
    if skipped:
        parts.append(f"skipped {len(skipped)}")
    print(", ".join(parts))
    # a mask that matches an image but does not fit it is bad input: the others are imported, but fail
    return EXIT_ERROR if invalid else EXIT_OK


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
    """First Ctrl-C asks the trainer to stop after its current step; a second one aborts."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        _err("stopping after this step (Ctrl-C again to abort)")

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def cmd_train(args) -> int:
    project = Project.open(args.project)
    device = _check_device(args.device)
    from segdesk.ml.config import TrainConfig
    from segdesk.ml.train import Trainer

    overrides = {k: v for k, v in (("crop_size", args.crop), ("batch_size", args.batch),
                                   ("lr", args.lr), ("base_width", args.base_width),
                                   ("depth", args.depth), ("val_every", args.val_every))
                 if v is not None}
    try:
        config = TrainConfig(**overrides)
    except (TypeError, ValueError) as exc:
        raise _fail(f"invalid training option: {exc}") from exc
    trainer = Trainer(project.root, config, device=device,
                      init=None if args.from_scratch else "current")
    if not trainer.has_data:
        raise _fail("no labels to train on yet: accept or correct some images, "
                    "or run segdesk import-labels first")
    parent = trainer.parent
    max_seconds = args.minutes * 60 if args.minutes is not None else None
    report = _TrainReport(sys.stderr, trainer.progress("training").step, config.val_every,
                          args.steps, max_seconds)
    log.info("training %s on %s from %s with %s", project.name, device, parent or "fresh weights", config)
    with _StopOnInterrupt() as stop:
        try:
            result = trainer.run(max_steps=args.steps, max_seconds=max_seconds,
                                 on_progress=report, should_stop=lambda: stop.requested)
        finally:
            report.close()
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
    return EXIT_OK


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
        raise _fail("--out DIR is required when predicting FILES")
    device = _check_device(args.device)
    out = exchange.prepare_out_dir(args.out) if args.out else None
    predictor = _load_predictor(project, device, args.checkpoint)
    if args.files:
        return _predict_files(predictor, args.files, out)
    names = exchange.export_names(project.images)
    todo = [e for e in project.images if e.status != STATUS_ACCEPTED]
    done, skipped = 0, []
    checkpoint = None
    for entry in todo:
        try:
            image = project.read_image(entry)
        except SegdeskError as exc:
            skipped.append((entry.source, str(exc)))
            continue
        pred = predictor.predict(image.pixels)
        checkpoint = pred.checkpoint
        project.save_proposal(entry.id, exchange.prediction_to_label(pred.classes), pred.checkpoint)
        if out is not None:
            exchange.write_mask(out / names[entry.id], pred.classes)
        done += 1
        log.debug("proposal for %s", entry.id)
    for path, reason in skipped:
        _err(f"skipped {path}: {reason}")
    where = f"; masks in {out}" if out is not None else ""
    print(f"stored {done} proposal{'s' if done != 1 else ''} from checkpoint {checkpoint or '-'}{where}"
          + (f", skipped {len(skipped)}" if skipped else ""))
    return EXIT_OK


def _predict_files(predictor, paths: Sequence[str], out: Path) -> int:
    files, skipped = _expand_files(paths)
    stems = [f.stem.lower() for f in files]
    done, checkpoint, written = 0, None, set()
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
        checkpoint = pred.checkpoint
        exchange.write_mask(out / (name + exchange.MASK_SUFFIX), pred.classes)
        written.add(name.lower())
        done += 1
    for path, reason in skipped:
        _err(f"skipped {path}: {reason}")
    print(f"wrote {done} mask{'s' if done != 1 else ''} to {out} from checkpoint {checkpoint or '-'}"
          + (f", skipped {len(skipped)}" if skipped else ""))
    return EXIT_OK


def cmd_export(args) -> int:
    project = Project.open(args.project, clean=False)  # a reader: no lock, no clean-up
    out = exchange.prepare_out_dir(args.out)
    names = exchange.export_names(project.images)
    wanted = {STATUS_ACCEPTED} | ({STATUS_IN_PROGRESS} if args.include_in_progress else set())
    if args.format != "png":
        return _export_volumes(project, out, wanted, args)
    count = 0
    for entry in project.images:
        if entry.status not in wanted:
            continue
        label = project.read_label(entry.id)
        if label is None:
            _err(f"skipped {entry.id}: its label file is missing")
            continue
        exchange.write_mask(out / names[entry.id], exchange.label_to_mask(label))
        count += 1
    print(f"exported {count} mask{'s' if count != 1 else ''} to {out} "
          f"(0 = background, " + ", ".join(f"{i} = {c.name}" for i, c in enumerate(project.classes, 1))
          + ")")
    return EXIT_OK


def _export_volumes(project: Project, out: Path, wanted: set[str], args) -> int:
    """DICOM SEG or NIfTI: one file per DICOM series (see segdesk.core.export_dicom_seg/_nifti)."""
    if args.format == "dicom-seg":
        from segdesk.core.export_dicom_seg import export_dicom_seg

        report = export_dicom_seg(project, out, wanted, keep_patient_data=args.keep_patient_data)
    else:
        from segdesk.core.export_nifti import export_nifti

        report = export_nifti(project, out, wanted)
    for what, reason in report.skipped:
        _err(f"skipped {what}: {reason}")
    for note in report.notes:
        _err(f"note: {note}")
    n = len(report.written)
    print(f"exported {n} {args.format} file{'s' if n != 1 else ''} to {out} (0 = background, "
          + ", ".join(f"{i} = {c.name}" for i, c in enumerate(project.classes, 1)) + ")")
    return EXIT_OK


def cmd_info(args) -> int:
    project = Project.open(args.project, clean=False)  # a reader: no lock, no clean-up
    from segdesk.ml.checkpoints import CheckpointStore

    store = CheckpointStore(project.root / "models")
    counts = {s: 0 for s in STATUSES}
    for e in project.images:
        counts[e.status] += 1
    info = {
        "name": project.name,
        "root": str(project.root),
        "classes": [{"name": c.name, "colour": c.color, "value": i}
                    for i, c in enumerate(project.classes, 1)],
        "images": [{"id": e.id, "source": e.source, "status": e.status,
                    "size": {"width": e.width, "height": e.height}} for e in project.images],
        "counts": counts,
        "checkpoints": store.list(),
        "current_model": store.current_id(),
    }
    print(json.dumps(info, indent=2))
    return EXIT_OK


def cmd_open(args) -> int:
    try:
        from segdesk.app import run_app
    except ImportError as exc:  # a build without the desktop app (or without Qt)
        raise _fail(f"the desktop app is not available: {exc}") from exc
    return run_app(args.project)


def cmd_demo(args) -> int:
    from segdesk import demo

    if args.no_gui:
        print(demo.create(args.into))
        return EXIT_OK
    try:
        return demo.run_gui(args.into)
    except ImportError as exc:  # a build without the desktop app (or without Qt)
        raise _fail(f"the desktop app is not available: {exc}; use segdesk demo --no-gui") from exc


# ----- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Label 2D medical images with a U-Net that learns while "
                     "you label. Run a command with --help for its options; with no command, "
                     "the desktop app opens.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, func, help_, more=""):
        p = sub.add_parser(name, help=help_, description=help_ + more)
        p.set_defaults(func=func)
        return p

    p = add("new", cmd_new, "create a project folder")
    p.add_argument("project", metavar="PROJECT", help="folder to create (or an empty folder)")
    p.add_argument("--classes", required=True, metavar="NAMES",
                   help="comma-separated class names, e.g. lung,heart; optional colour as "
                        "name:#rrggbb. Background is built in.")

    p = add("add", cmd_add, "add image files or folders (recursively) to a project")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("paths", nargs="+", metavar="PATH")

    p = add("import-labels", cmd_import_labels,
            "import PNG masks (0 = background, 1..K = class) as accepted labels",
            more="; masks that fit are imported, and the exit status is 1 if any matching mask "
                 "did not fit (wrong size, values above K, unreadable)")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("mask_dir", metavar="MASK_DIR",
                   help="folder of masks named like the images (source stem or image id) + .png")
    p.add_argument("--overwrite", action="store_true",
                   help="also replace labels of images already accepted or in progress")

    p = add("train", cmd_train, "train the project's model on its accepted and corrected labels")
    p.add_argument("project", metavar="PROJECT")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive_int, metavar="N", help="stop after N steps")
    budget.add_argument("--minutes", type=_positive_float, metavar="M", help="stop after M minutes")
    p.epilog = ("Without --steps or --minutes, training goes on until validation stops improving. "
                "Ctrl-C stops after the current step; the best checkpoint is kept either way.")
    p.add_argument("--device", metavar="D", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--from-scratch", action="store_true",
                   help="start from fresh weights instead of the current checkpoint")
    adv = p.add_argument_group("advanced (model and training settings)")
    adv.add_argument("--crop", type=_positive_int, metavar="PX", help="training crop size in pixels")
    adv.add_argument("--batch", type=_positive_int, metavar="N", help="batch size")
    adv.add_argument("--lr", type=_positive_float, metavar="LR", help="learning rate")
    adv.add_argument("--base-width", type=_positive_int, metavar="C",
                     help="U-Net channels at full resolution (only for a new model)")
    adv.add_argument("--depth", type=_positive_int, metavar="N",
                     help="U-Net levels (only for a new model)")
    adv.add_argument("--val-every", type=_positive_int, metavar="N", help="validate every N steps")

    p = add("predict", cmd_predict,
            "store proposals for images without an accepted label, or predict FILES into --out")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("files", nargs="*", metavar="FILES",
                   help="image files or folders to predict instead of the project's images "
                        "(need not be in the project; --out required)")
    p.add_argument("--out", metavar="DIR", help="also write PNG masks 0..K named <source stem>.png here")
    p.add_argument("--device", metavar="D", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--checkpoint", metavar="ID", help="use this checkpoint instead of the current one")

    p = add("export", cmd_export,
            "write masks (0 = background, 1..K = class) of accepted images: PNG per image, or a "
            "DICOM SEG / NIfTI label map per DICOM series")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for <source stem>.png masks (<image id>.png for DICOM images), "
                        "<series>.seg.dcm or <series>.nii.gz")
    p.add_argument("--format", choices=("png", "dicom-seg", "nifti"), default="png",
                   help="png (default), dicom-seg (DICOM Segmentation per series, references its "
                        "source images) or nifti (label map per series, affine from the DICOM geometry)")
    p.add_argument("--keep-patient-data", action="store_true",
                   help="dicom-seg: copy patient name, ID, birth date and study details from the "
                        "sources (by default they are removed, PS3.15 basic profile)")
    p.add_argument("--include-in-progress", action="store_true",
                   help="also export corrected images (unlabelled pixels as 0)")

    p = add("info", cmd_info, "print the project as JSON: classes, images, counts, checkpoints")
    p.add_argument("project", metavar="PROJECT")

    p = add("open", cmd_open, "open the desktop app (optionally on a project)")
    p.add_argument("project", nargs="?", metavar="PROJECT")

    from segdesk.bench.commands import add_bench_parser

    add_bench_parser(add("bench", None, "benchmarks: loop (correction effort while the model learns), "
                         "latency, ui, brush; each writes RESULT.json and RESULT.png"))

    p = add("demo", cmd_demo, "copy the bundled demo project (nuclei, CC0) into your data folder and open it",
            more="; an existing demo you worked on is kept (a new copy is made beside it)")
    p.add_argument("--no-gui", "--path-only", dest="no_gui", action="store_true",
                   help="only create the demo project and print its path")
    p.add_argument("--into", metavar="DIR", help="create the demo here instead of the data folder")
    return parser


def _setup_logging(verbose: bool) -> tuple[logging.Handler, int]:
    """A stderr handler on the 'segdesk' logger for this run; returns it and the level to restore."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("segdesk: %(levelname)s: %(name)s: %(message)s"))
    root = logging.getLogger("segdesk")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    return handler, old_level


# Commands that write into the project hold its lock (segdesk.core.project_lock) while they run, so
# they refuse, in one line, while the project is open in the desktop app. ``train`` too: it writes
# checkpoints, and two trainers would number theirs alike; the window trains by itself anyway.
WRITING_COMMANDS = frozenset({"add", "import-labels", "train", "predict"})


def _write_lock(args):
    from contextlib import nullcontext

    from segdesk.core.project import PROJECT_FILE
    from segdesk.core.project_lock import ProjectLock

    if args.command not in WRITING_COMMANDS or not (Path(args.project) / PROJECT_FILE).is_file():
        return nullcontext()  # not a writer, or not a project: the command says so itself
    return ProjectLock.acquire(args.project, owner=f"segdesk {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (0 success, 1 error, 2 bad command line)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        _err(f"{PROG}: error: {exc}")
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    handler, old_level = _setup_logging(args.verbose)
    try:
        if args.command is None:
            args.project = None
            return cmd_open(args)
        with _write_lock(args):
            return args.func(args)
    except (SegdeskError, OSError) as exc:
        log.debug("command failed", exc_info=True)
        message = " ".join(str(exc).split()) or type(exc).__name__
        _err(f"{PROG}: error: {message}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _err(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    finally:
        logging.getLogger("segdesk").removeHandler(handler)
        logging.getLogger("segdesk").setLevel(old_level)
