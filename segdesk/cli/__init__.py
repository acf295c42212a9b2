"""Headless commands on core + ml: segdesk new | add | import-labels | pretrain | train | predict | export | info |
bench | demo.

Results go to stdout, progress and skipped-file reasons to stderr, diagnostics through ``logging``
(``-v`` for debug). A user error (bad input, missing project, unknown device, ...) ends the command
with exit status 1 and one line ``segdesk: error: <message>`` on stderr, never a traceback; a bad
command line exits with 2. torch is imported only by the commands that need it, Qt only by ``open``.

This module is the entry point (parser, locking, exit statuses); the commands live in
segdesk.cli.project (project files, app), segdesk.cli.model (train, predict) and segdesk.bench.commands.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from segdesk import __version__
from segdesk.cli.argtypes import positive_float, positive_int
from segdesk.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, PROG, log, print_err
from segdesk.cli.model import cmd_predict, cmd_pretrain, cmd_train
from segdesk.cli.project import cmd_add, cmd_demo, cmd_export, cmd_import_labels, cmd_info, cmd_new, cmd_open
from segdesk.core.third_party import quiet_pydicom
from segdesk.core.errors import SegdeskError


def _augmentation(text: str) -> dict[str, bool]:
    """``train --augment``: the flips and turns to use, e.g. "flip-ud,rot90", "all" or "off"."""
    from segdesk.ml.augment_plan import parse_choice

    try:
        return parse_choice(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _UsageError(Exception):
    """A bad command line; argparse's message, shown on one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message, and no SystemExit
        raise _UsageError(f"{message} (see {self.prog} --help)")


# ----- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Label 2D medical images with a U-Net that learns while "
                     "you label. Run a command with --help for its options; with no command, "
                     "the desktop app opens.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    parser.commands = {}

    def add(name, func, help_, more=""):
        p = sub.add_parser(name, help=help_, description=help_ + more)
        p.set_defaults(func=func)
        parser.commands[name] = p
        return p

    p = add("new", cmd_new, "create a project folder")
    p.add_argument("project", metavar="PROJECT", help="folder to create (or an empty folder)")
    p.add_argument("--classes", required=True, metavar="NAMES",
                   help="comma-separated class names, e.g. lung,heart; optional colour as "
                        "name:#rrggbb. Background is built in.")

    p = add("add", cmd_add, "add image files or folders (recursively) to a project")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.epilog = ("Each file that cannot be added (unreadable, not an image, missing) and each folder "
                "without images gets one line on stderr with the reason. Images already in the "
                "project are counted and left as they are; that is not an error, so adding a folder "
                "again adds only its new files. Exit status: 0 when an image was added (others may "
                "have been skipped) or everything given is already in the project; 1 when nothing "
                "was added and something given could not be, or the project cannot be opened; 2 "
                "for a bad command line.")

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
    budget.add_argument("--steps", type=positive_int, metavar="N", help="stop after N steps")
    budget.add_argument("--minutes", type=positive_float, metavar="M", help="stop after M minutes")
    budget.add_argument("--follow", action="store_true",
                        help="keep training as new labels arrive (e.g. on a GPU server sharing the "
                             "project folder with the desktop app); stop with Ctrl-C or SIGTERM")
    p.epilog = ("Without --steps, --minutes or --follow, training goes on until validation stops improving. "
                "Ctrl-C stops after the current step; the best checkpoint is kept either way. "
                "Several GPUs: torchrun --nproc-per-node N -m segdesk train PROJECT ...")
    p.add_argument("--device", metavar="D", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--from-scratch", action="store_true",
                   help="start from fresh weights instead of the current checkpoint")
    adv = p.add_argument_group("advanced (model and training settings)")
    adv.add_argument("--crop", type=positive_int, metavar="PX", help="training crop size in pixels")
    adv.add_argument("--batch", type=positive_int, metavar="N", help="batch size")
    adv.add_argument("--lr", type=positive_float, metavar="LR", help="learning rate")
    adv.add_argument("--base-width", type=positive_int, metavar="C",
                     help="U-Net channels at full resolution (only for a new model)")
    adv.add_argument("--depth", type=positive_int, metavar="N",
                     help="U-Net levels (only for a new model)")
    adv.add_argument("--val-every", type=positive_int, metavar="N", help="validate every N steps")
    adv.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                     help="number format of training: auto (default: bf16 on NVIDIA Ampere or later and on CPUs with "
                          "avx512_bf16 or AMX, else fp32), bf16 or fp32")
    adv.add_argument("--heartbeat", type=positive_float, metavar="S",
                     help="with --follow: seconds between the heartbeats the desktop app watches (default 5)")
    adv.add_argument("--augment", type=_augmentation, metavar="LIST",
                     help="flips and turns to use instead of those planned from the labels and the "
                          "project's augmentation setting: a comma list of flip-lr, flip-ud, rot90; "
                          "or all; or off")

    p = add("pretrain", cmd_pretrain, "learn from the project's images before they have labels (self-supervised)",
            more=": the model learns to restore hidden patches of the images, and training starts from "
                 "what it learnt. For a new project's model; it continues an earlier pretraining.")
    p.add_argument("project", metavar="PROJECT")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=positive_int, metavar="N", help="stop after N steps in all")
    budget.add_argument("--minutes", type=positive_float, metavar="M", help="stop after M more minutes")
    p.add_argument("--device", metavar="D", help="auto (default), cpu, cuda, cuda:N or mps")
    p.epilog = ("It learns at the working scale a label plans: accept or import one label first. Ctrl-C stops "
                "after the current step and keeps what was learnt (models/pretrained.safetensors). 5,000 steps "
                "took 11 minutes on one CPU core and raised Dice for labels trained on together, not in the "
                "image-by-image loop (docs/benchmarks.md).")

    p = add("predict", cmd_predict,
            "store proposals for images without an accepted label, or predict FILES into --out")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("files", nargs="*", metavar="FILES",
                   help="image files or folders to predict instead of the project's images "
                        "(need not be in the project; --out required)")
    p.add_argument("--out", metavar="DIR", help="also write PNG masks 0..K named <source stem>.png here")
    p.add_argument("--device", metavar="D", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--checkpoint", metavar="ID", help="use this checkpoint instead of the current one")
    p.epilog = ("Exit status: 0 when every image got its mask; 1 when any was skipped (one line on stderr each, "
                "saying why) or there is no model yet; 2 for a bad command line.")

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
    p.epilog = ("Exit status: 0 when every wanted image was exported; 1 when any image or series was "
                "skipped (one line each on stderr says which and why; the others are written all "
                "the same) or the project or --out folder cannot be used; 2 for a bad command line.")

    p = add("info", cmd_info, "print the project as JSON: classes, images, counts, checkpoints")
    p.add_argument("project", metavar="PROJECT")
    p.epilog = ("Exit status: 0 on success; 1 when PROJECT does not exist, is not a segdesk project "
                "or cannot be read; 2 for a bad command line.")

    p = add("open", cmd_open, "open the desktop app (optionally on a project)")
    p.add_argument("project", nargs="?", metavar="PROJECT")

    from segdesk.bench.commands import add_bench_parser

    add_bench_parser(add("bench", None, "benchmarks: loop (correction effort while the model learns), "
                         "latency, ui, large, brush; each writes RESULT.json and RESULT.png"))

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


# Commands that write into the project hold its labels lock (segdesk.core.project_lock) while they
# run, so they refuse, in one line, while the project is open in the desktop app. ``train`` writes
# only checkpoints (models/) and the log: it holds the models lock instead, so it can train while
# the app labels, and refuses while another trainer (the app's own, or another server) holds it.
WRITING_COMMANDS = frozenset({"add", "import-labels", "train", "pretrain", "predict"})


def _write_lock(args):
    from contextlib import nullcontext

    from segdesk.core.project import PROJECT_FILE
    from segdesk.core.project_lock import LABELS, MODELS, ProjectLock

    if args.command not in WRITING_COMMANDS or not (Path(args.project) / PROJECT_FILE).is_file():
        return nullcontext()  # not a writer, or not a project: the command says so itself
    if args.command == "pretrain":
        return ProjectLock.acquire(args.project, owner="segdesk pretrain", kind=MODELS)
    if args.command == "train":
        if not _distributed_rank_zero():
            return nullcontext()  # torchrun: rank 0 holds it for all
        return ProjectLock.acquire(args.project, owner="segdesk train", kind=MODELS)
    return ProjectLock.acquire(args.project, owner=f"segdesk {args.command}", kind=LABELS)


def _distributed_rank_zero() -> bool:
    """False in the processes torchrun starts besides rank 0 (RANK is torchrun's variable)."""
    return os.environ.get("RANK", "0") == "0"


# Commands whose options may also stand between or after their lists of paths, as README writes
# "predict PROJECT --out DIR FILES": plain argparse ends a list at the first option and refuses the rest.
INTERMIXED_COMMANDS = frozenset({"add", "predict"})


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line (``_UsageError`` for a bad one)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extras = parser.parse_known_args(argv)
    if extras and args.command in INTERMIXED_COMMANDS:
        rest = argv[argv.index(args.command) + 1:]
        # a fresh namespace: argparse warns (to the user's terminal) about positionals already in one
        command_args = parser.commands[args.command].parse_intermixed_args(rest)
        for key, value in vars(args).items():  # the options before the command (-v)
            if not hasattr(command_args, key):
                setattr(command_args, key, value)
        return command_args
    return parser.parse_args(argv)  # argparse's own message for what is left over


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (0 success, 1 error, 2 bad command line)."""
    quiet_pydicom()
    try:
        code = _run(argv)
        sys.stdout.flush()  # here, so that a reader that went away is answered below
        return code
    except BrokenPipeError:  # `segdesk info P | head`: the reader has what it wanted; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor an error at exit's flush
        return EXIT_ERROR


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except _UsageError as exc:
        print_err(f"{PROG}: error: {exc}")
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
    except BrokenPipeError:
        raise  # main's: not an error to report
    except (SegdeskError, OSError) as exc:
        log.debug("command failed", exc_info=True)
        message = " ".join(str(exc).split()) or type(exc).__name__
        print_err(f"{PROG}: error: {message}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        print_err(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    finally:
        logging.getLogger("segdesk").removeHandler(handler)
        logging.getLogger("segdesk").setLevel(old_level)
