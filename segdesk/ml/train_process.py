"""The window's trainer, run in a child process: ``python -m segdesk.ml.train_process``.

Why a process and not a thread: a training step holds Python's GIL between its torch calls, and a
training thread that the scheduler has put behind other programs (it runs niced, below the GUI)
keeps the GUI thread waiting for the GIL for tens of ms: the longest stalls left in ``segdesk
bench ui`` were such waits. In its own process training has its own GIL, the operating system's
priorities apply to it whole, and a crash or an out-of-memory kill in training ends the child, not
the window with the user's work.

The protocol is line by line. The parent writes the set-up first, as JSON (``{"root", "config",
"device"}``), then gate commands, a word a line (segdesk.ml.gate: labels announced, stop, proposal
begun or ended); the child answers ``{"state": s}``, ``{"progress": {...}}`` and ``{"failed":
message}`` on its stdout. When the parent goes away its end of stdin closes, and the child stops
after its current step; every write it makes is atomic, so nothing half-written is left.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import threading
from pathlib import Path
from typing import Callable

from segdesk.core.errors import SegdeskError
from segdesk.core.third_party import quiet_pydicom
from segdesk.ml.gate import TrainingGate
from segdesk.ml.states import ERROR, STOPPED, TRAINING, WAITING

log = logging.getLogger(__name__)

Send = Callable[[str, object], None]  # ("state" | "progress" | "failed", payload)


def run_training(root: Path, config, device: str | None, gate: TrainingGate, send: Send) -> None:
    """Train the project until the gate's stop, waiting for labels whenever there are none or
    patience ran out; report through ``send``. Errors are sent, never raised (ends with an ERROR
    or STOPPED state)."""
    try:
        _train(root, config, device, gate, send)
    except SegdeskError as exc:
        send("state", ERROR)
        send("failed", str(exc))
    except MemoryError:
        send("state", ERROR)
        send("failed", "Training ran out of memory. Lower the crop size or batch size.")
    except Exception as exc:  # noqa: BLE001 - reported to the window, never raised in a worker
        log.exception("training failed")
        send("state", ERROR)
        send("failed", f"Training stopped with an error: {exc}")
    else:
        send("state", STOPPED)


def _train(root: Path, config, device: str | None, gate: TrainingGate, send: Send) -> None:
    from segdesk.ml import device as ml_device
    from segdesk.ml.config import TrainConfig
    from segdesk.ml.train import Trainer

    ml_device.limit_cpu_threads()
    trainer = Trainer(root, config or TrainConfig(), device=device, gate=gate)
    while not gate.stopped:
        if not trainer.has_data:
            send("state", WAITING)
            trainer.wait_for_labels()
            continue
        send("state", TRAINING)
        trainer.run(on_progress=lambda p: send("progress", progress_dict(p)))
        if gate.stopped:
            return
        send("state", STOPPED)  # patience ran out: announced labels restart it
        if gate.wait_for_labels():
            trainer.refresh_labels()


def progress_dict(progress) -> dict:
    """A trainer Progress as plain data (JSON has no NaN: an unknown loss is None)."""
    data = dataclasses.asdict(progress) if dataclasses.is_dataclass(progress) else dict(progress)
    if isinstance(data.get("loss"), float) and not math.isfinite(data["loss"]):
        data["loss"] = None
    return data


def _obey(commands, gate: TrainingGate) -> None:
    """The stdin reader: gate commands until the parent's end closes, then a stop."""
    try:
        for line in commands:
            gate.obey(line.strip())
    except (OSError, ValueError) as exc:
        log.warning("the window's commands could not be read: %s", exc)
    gate.stop()  # the window closed (or crashed): stop after this step


def lower_priority(nice: int) -> None:
    """Run ``nice`` below normal priority (call it before any thread starts: they inherit it). Not
    SCHED_IDLE: measured with ``segdesk bench ui --busy-cores 1`` it gave about the same stalls
    (docs/benchmarks.md), and an idle-class trainer gets no CPU at all while other programs keep
    every core busy: the model would stop learning."""
    if hasattr(os, "nice"):
        try:
            os.nice(nice)
        except OSError as exc:
            log.info("priority not lowered: %s", exc)


def main(argv: list[str] | None = None) -> int:
    """``[NICE]``: how far below normal priority to train (before any thread starts: they inherit it)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        lower_priority(int(argv[0]))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="segdesk trainer: %(levelname)s: %(name)s: %(message)s")
    quiet_pydicom()  # it reads the project's DICOM files too
    # Messages go to a private copy of stdout; anything else printed (a library's print) goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    setup = json.loads(sys.stdin.readline() or "null")
    if not isinstance(setup, dict):
        log.error("no set-up from the window: nothing to train")
        return 2
    gate = TrainingGate()
    threading.Thread(target=_obey, args=(sys.stdin, gate), name="segdesk-trainer-commands", daemon=True).start()
    write_lock = threading.Lock()

    def send(kind: str, payload) -> None:
        line = json.dumps({kind: payload})
        with write_lock:
            try:
                out.write(line + "\n")
            except OSError:  # the window is gone: the stdin reader has stopped the gate too
                gate.stop()

    from segdesk.ml.config import TrainConfig

    config = TrainConfig(**setup["config"]) if setup.get("config") else None
    run_training(Path(setup["root"]), config, setup.get("device"), gate, send)
    return 0


if __name__ == "__main__":
    sys.exit(main())
