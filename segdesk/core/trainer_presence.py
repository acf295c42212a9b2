"""A trainer elsewhere announces itself: ``models/trainer.json``, rewritten atomically.

A headless trainer (``segdesk train --follow``, maybe on a GPU server sharing the project folder)
writes its host, device, process, state and progress every few seconds. The window reads it to
say "training on HOST (device)" and to stay out of the way while it is fresh. Freshness is judged
by the reader's own clock, from when it last saw the file change, so two computers whose clocks
disagree still agree on who is alive.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from segdesk.core import storage
from segdesk.core.errors import SegdeskError

log = logging.getLogger(__name__)

HEARTBEAT_FILE = Path("models") / "trainer.json"
BEAT_S = 5.0  # how often a trainer rewrites it
STALE_AFTER_S = 30.0  # unchanged this long (six missed beats): the trainer is gone
_MAX_BYTES = 16384


def heartbeat_path(root: str | os.PathLike) -> Path:
    return Path(root) / HEARTBEAT_FILE


def write_heartbeat(root: str | os.PathLike, device: str, **progress) -> bool:
    """Announce this process as the project's trainer; False (logged) when the share is away:
    the trainer goes on and beats again later."""
    record = {"host": socket.gethostname(), "pid": os.getpid(), "device": device,
              "time": round(time.time(), 3), **progress}
    try:
        storage.atomic_write_json(heartbeat_path(root), record)
    except SegdeskError as exc:
        log.warning("could not write the trainer heartbeat: %s", exc)
        return False
    return True


def clear_heartbeat(root: str | os.PathLike, pid: int | None = None) -> None:
    """Remove the heartbeat at a clean stop (only this process's, when ``pid`` is given)."""
    path = heartbeat_path(root)
    record = read_heartbeat(root)
    if record is None or (pid is not None and record.get("pid") != pid):
        return
    try:
        path.unlink()
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


def read_heartbeat(root: str | os.PathLike) -> dict | None:
    """The heartbeat's record, or None when there is none or it cannot be read."""
    try:
        with open(heartbeat_path(root), "rb") as f:
            raw = f.read(_MAX_BYTES + 1)
        record = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("host"), str) else None


def describe(record: dict) -> str:
    """"HOST (device)", as the Training panel says it."""
    device = record.get("device")
    return f"{record.get('host')} ({device})" if device else str(record.get("host"))


class PresenceWatch:
    """Judges, from successive reads, whether a trainer elsewhere is alive. Qt-free; call
    ``look`` now and then (a few seconds apart is plenty)."""

    def __init__(self, root: str | os.PathLike, own_pid: int | None = None,
                 stale_after_s: float = STALE_AFTER_S, clock=time.monotonic):
        self.root = Path(root)
        self.own_pid = os.getpid() if own_pid is None else own_pid
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._last: dict | None = None
        self._changed_at: float | None = None
        self.record: dict | None = None  # the last record read from another process

    def look(self) -> dict | None:
        """The other trainer's record while it is alive, else None."""
        record = read_heartbeat(self.root)
        now = self._clock()
        if record is None or (record.get("pid") == self.own_pid and record.get("host") == socket.gethostname()):
            self._last = self._changed_at = self.record = None
            return None
        if record != self._last:
            first = self._last is None
            self._last = record
            # A record seen for the first time is dated by its own clock (bounded by the threshold,
            # so a skewed clock costs at most one threshold), then by when it changes.
            age = max(0.0, time.time() - float(record.get("time") or 0.0)) if first else 0.0
            self._changed_at = now - min(age, self.stale_after_s)
        self.record = record
        return record if now - self._changed_at < self.stale_after_s else None

    def seconds_silent(self) -> float | None:
        """Since the record last changed; None when there is none."""
        return None if self._changed_at is None else self._clock() - self._changed_at
