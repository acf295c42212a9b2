"""The training worker: its own model and optimizer, off the GUI thread (DESIGN.md "Threads").

The window's worker trains in a child process (segdesk.ml.train_process: its own GIL, so a step
never keeps the GUI thread waiting, and a crash there ends training, not the window); this worker's
thread then only relays the child's reports as signals. Without ``child_process`` it trains on its
own thread (tests, scripts). Either way it reads saved labels from disk (never the GUI's arrays),
stops within one step when cancelled, reports progress as plain dicts, and publishes weights only as
finished checkpoint files. Every wait (for labels, for a stop, for a running proposal) is on the
TrainingGate it shares with the inference worker (segdesk.ml.gate), whose announcements reach a
child as commands.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import site
import subprocess
import sys
import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot

import segdesk
from segdesk.ml.gate import TrainingGate
from segdesk.ml.states import ERROR, STOPPED
from segdesk.ml.train_process import run_training

log = logging.getLogger(__name__)

STOP_GRACE_S = 20.0  # a child still running this long after a stop is killed (its writes are atomic)


# Windows has no nice: its child starts in the "below normal" priority class instead (the constant exists
# only in Windows' subprocess module)
_BELOW_NORMAL_PRIORITY_CLASS = getattr(subprocess, "BELOW_NORMAL_PRIORITY_CLASS", 0x00004000)


def priority_flags(nice: int, platform: str = sys.platform) -> int:
    """Popen's ``creationflags`` for a child below the window's priority: on Windows, where the child
    cannot lower its own (os.nice is missing), the "below normal" class; elsewhere 0 (it nices itself)."""
    return _BELOW_NORMAL_PRIORITY_CLASS if platform == "win32" and nice > 0 else 0


def _site_dirs() -> list[Path]:
    """Where installed packages live: never put ahead of the standard library on PYTHONPATH."""
    dirs = list(getattr(site, "getsitepackages", list)()) + [site.getusersitepackages()]
    return [Path(d).resolve() for d in dirs]


class TrainingWorker(QObject):
    progress = Signal(object)  # dict: step, loss, val_dice, val_dice_per_class, images_per_s, checkpoint, state
    checkpoint_saved = Signal(str)  # checkpoint id
    state_changed = Signal(str)  # one of WAITING, TRAINING, IMPROVED, STOPPED, ERROR
    failed = Signal(str)
    finished = Signal()

    def __init__(self, project_root: Path, config=None, device: str | None = None,
                 gate: TrainingGate | None = None, child_process: bool = False, nice: int = 0):
        """``gate``: shared with the inference worker, which holds it while it segments: training
        then pauses after its current step, so a proposal never waits behind more than one step.
        ``child_process``: train in a child process started at ``nice`` below normal priority."""
        super().__init__()
        self._gate = gate or TrainingGate()
        self._root = Path(project_root)
        self._config = config
        self._device = device
        self._child_process = child_process
        self._nice = nice
        self._last_checkpoint: str | None = None
        self._last_state: str | None = None
        self._child: subprocess.Popen | None = None
        self._child_lock = threading.Lock()  # one writer of the child's stdin at a time
        self._ended: set[subprocess.Popen] = set()  # children this worker killed after a stop

    # thread-safe, called from the GUI thread
    def cancel(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop after the current step; a child process still running ``grace_s`` later is ended
        (closing the window need not wait for a step: every write the trainer makes is atomic)."""
        self._gate.stop()
        child = self._child
        if child is not None:
            timer = threading.Timer(grace_s, self._kill, args=(child,))
            timer.daemon = True
            timer.start()

    def arm(self) -> None:
        """Before ``run`` is queued: a stop asked after this (even before the run begins on its
        thread) ends that run. Clearing the stop at the run's start instead would lose a cancel
        that came between the request and the start, and the run would never end."""
        self._gate.clear_stop()

    def labels_changed(self) -> None:
        self._gate.announce_labels()

    @Slot()
    def run(self) -> None:
        self._last_state = None
        try:
            if self._child_process:
                self._run_child()
            else:
                run_training(self._root, self._config, self._device, self._gate, self._relay)
        finally:
            self.finished.emit()

    def _relay(self, kind: str, payload) -> None:
        """One report of the trainer (here or in the child) as this worker's signals."""
        if kind == "state":
            self._last_state = payload
            self.state_changed.emit(payload)
        elif kind == "failed":
            self.failed.emit(str(payload))
        elif kind == "progress":
            self.progress.emit(payload)  # plain data already (train_process.progress_dict)
            checkpoint = payload.get("checkpoint")
            if checkpoint and checkpoint != self._last_checkpoint:  # Progress repeats the newest one
                self._last_checkpoint = checkpoint
                self.checkpoint_saved.emit(checkpoint)
            if payload.get("state"):
                self._last_state = payload["state"]
                self.state_changed.emit(payload["state"])

    # ----- the child process

    def _run_child(self) -> None:
        if self._gate.stopped:  # stopped before the run began
            self._relay("state", STOPPED)
            return
        env = dict(os.environ)
        source = Path(segdesk.__file__).resolve().parents[1]
        if source not in _site_dirs():  # a checkout: the child imports this very segdesk
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "segdesk.ml.train_process", str(self._nice)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, encoding="utf-8", bufsize=1,
                creationflags=priority_flags(self._nice))
        except OSError as exc:
            self._relay("state", ERROR)
            self._relay("failed", f"Training could not start: {exc}")
            return
        setup = {"root": str(self._root), "device": self._device,
                 "config": dataclasses.asdict(self._config) if self._config is not None else None}
        with self._child_lock:
            self._child = child
            self._write(json.dumps(setup))
        self._gate.forward(self._command)  # from here on every announcement reaches the child
        try:
            for line in child.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    log.warning("trainer said something unreadable: %.200s", line)
                    continue
                for kind, payload in message.items():
                    self._relay(kind, payload)
        finally:
            self._gate.forward(None)
            with self._child_lock:
                self._child = None
                try:
                    child.stdin.close()  # the child's stop, should it still run
                except OSError:
                    pass
            code = self._wait(child)
        if code != 0 and child in self._ended:  # ended after a stop it was slow to obey
            self._relay("state", STOPPED)
        elif code != 0 and self._last_state != ERROR:  # it ended without saying why: killed or crashed
            log.error("the trainer process ended with status %s", code)
            self._relay("state", ERROR)
            self._relay("failed", f"Training stopped unexpectedly (the trainer process ended with status "
                                  f"{code}). Checkpoints saved so far are kept; Start training goes on.")

    def _command(self, command: str) -> None:
        """The gate's forward: one command to the child (any thread; never raises)."""
        with self._child_lock:
            if self._child is not None:
                self._write(command)

    def _write(self, line: str) -> None:
        try:
            self._child.stdin.write(line + "\n")
        except (OSError, ValueError):  # the child has gone: its end is reported by the reader
            pass

    def _wait(self, child: subprocess.Popen) -> int:
        try:
            return child.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._kill(child)
            return child.wait()

    def _kill(self, child: subprocess.Popen) -> None:
        if child.poll() is None:
            log.info("the trainer process had not stopped: ending it")
            self._ended.add(child)
            child.kill()
