"""One label writer and one model writer per project: two lock files in the project folder.

Two programs writing one project (two windows, or a window and ``segdesk train``) would race on
project.json, number two checkpoints alike, and each would delete the other's in-flight temporary
files when it opens the project. So whoever writes holds ``<project>/.segdesk.lock``:

- Created with ``O_CREAT | O_EXCL`` (atomic, also on network shares), holding JSON: pid, host,
  process start token, owner ("segdesk window", "segdesk train", ...), time and a random token.
- A lock is **stale** when its holder is gone: on the same host, its pid is not running (or runs
  a different process, told apart by the start token, e.g. after a reboot); on another host, the
  holder stopped refreshing the file's modification time (a heartbeat every minute) for
  ``STALE_AFTER_S``. A lock file left empty or unreadable by a crash during its creation is stale
  after ``GRACE_S``.
- A stale lock is taken over atomically: takers serialise on a second O_EXCL file, re-read the
  lock to check it is still the stale one they judged, remove it and create their own with
  O_EXCL again; if anyone else got there first, they see a live lock and back off.
- ``release`` removes the file only if it still holds this lock's token.

The **labels lock** (``LABELS``: ``.segdesk.lock``) is held by whoever writes labels and project.json
(the window, ``segdesk add``...). The **models lock** (``MODELS``: ``.segdesk-models.lock``) is held by
whoever writes checkpoints (the window while it trains, ``segdesk train``, a trainer on a GPU server
following the project); it beats every few seconds, so a trainer on another computer that went
away is stale within ``MODELS.stale_after_s``. One of each may work at once, never two of either.

Where the folder cannot hold a lock at all (read-only medium), ``acquire`` raises LockUnavailable;
nothing can be written there either, so the window may still open it to look.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from segdesk.core.errors import ProjectError

log = logging.getLogger(__name__)

LOCK_FILE = ".segdesk.lock"
TAKEOVER_FILE = ".segdesk.lock.takeover"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 300.0  # another host's lock without a heartbeat for this long is stale
GRACE_S = 10.0  # an empty or unreadable lock younger than this is being written
_TAKEOVER_STALE_S = 30.0
_MAX_LOCK_BYTES = 4096


@dataclass(frozen=True)
class LockKind:
    file: str
    heartbeat_s: float  # how often the holder touches the file
    stale_after_s: float  # another computer's lock untouched this long is stale
    refused: str  # the message's end when it is held: what the user can do


LABELS = LockKind(LOCK_FILE, HEARTBEAT_S, STALE_AFTER_S,
                  "Close it there first: two programs writing one project can lose labels.")
MODELS = LockKind(".segdesk-models.lock", 5.0, 30.0,
                  "One trainer at a time: stop that one first, or let it train for you.")


class ProjectLocked(ProjectError):
    """The project is open in another live segdesk; ``holder`` is what its lock file says."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder or {}


class LockUnavailable(ProjectError):
    """No lock file can be created here (read-only folder or medium, no permission)."""


# ----- who is alive


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_token(pid: int) -> str:
    """Something that differs between two processes that had the same pid (Linux: boot id and
    start time); "" where the platform does not tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return f"{_boot_id()}:{fields[19]}" if len(fields) > 19 else ""


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0: only checks (on POSIX; on Windows it would kill)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def _windows_pid_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _host() -> str:
    return socket.gethostname()


# ----- reading a lock


def _read(path: Path) -> tuple[bytes, dict | None, float] | None:
    """(raw bytes, parsed holder or None if unreadable, mtime), or None when there is no lock."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_LOCK_BYTES + 1)
            mtime = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(raw.decode("utf-8"))
        if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
            holder = None
    except (UnicodeDecodeError, ValueError, RecursionError):
        holder = None
    return raw, holder, mtime


def stale_reason(holder: dict | None, mtime: float, now: float | None = None,
                 stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why a lock is stale, or None when its holder may still be working."""
    now = time.time() if now is None else now
    age = now - mtime
    if holder is None:
        return f"its lock file is unreadable and {age:.0f} s old" if age > GRACE_S else None
    if holder.get("host") == _host():
        pid = holder["pid"]
        if not pid_alive(pid):
            return f"process {pid} is no longer running"
        token = holder.get("token_start") or ""
        if token and process_token(pid) and process_token(pid) != token:
            return f"process {pid} is a different program now (the computer restarted?)"
        return None
    if age > stale_after_s:
        return f"computer {holder.get('host')!r} has not refreshed it for {age:.0f} s"
    return None


def describe(holder: dict | None, mtime: float | None = None) -> str:
    if not holder:
        return "another segdesk (its lock file is being written)"
    since = holder.get("time")
    when = datetime.fromtimestamp(since).strftime("%Y-%m-%d %H:%M") if isinstance(since, (int, float)) else "?"
    owner = holder.get("owner") or "segdesk"
    if holder.get("host") == _host():
        where = "in this segdesk" if holder.get("pid") == os.getpid() else f"by process {holder.get('pid')}"
        return f"{owner} {where} on this computer, since {when}"
    return f"{owner} on computer {holder.get('host')!r} (process {holder.get('pid')}), since {when}"


# ----- the lock


class ProjectLock:
    """A held lock. Use ``acquire``; ``release`` (or leave the ``with`` block) when done."""

    def __init__(self, root: Path, path: Path, content: dict, heartbeat: bool, kind: LockKind = LABELS):
        self.root = root
        self.kind = kind
        self.path = path
        self.content = content
        self._raw = _encode(content)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False
        self.took_over: str | None = None  # why a stale lock was replaced, if one was
        if heartbeat:
            self._thread = threading.Thread(target=self._beat, name="segdesk-lock-heartbeat", daemon=True)
            self._thread.start()

    @classmethod
    def acquire(cls, root: str | os.PathLike, owner: str = "segdesk", heartbeat: bool = True,
                kind: LockKind = LABELS) -> "ProjectLock":
        """Hold the project's lock of ``kind``. ProjectLocked when a live segdesk holds it;
        LockUnavailable when the folder cannot hold a lock file; a stale lock is taken over (logged)."""
        root = Path(root).expanduser().resolve()
        path = root / kind.file
        content = {
            "pid": os.getpid(), "host": _host(), "token_start": process_token(os.getpid()),
            "owner": owner, "time": round(time.time(), 3), "token": secrets.token_hex(8),
        }
        took_over = None
        for _ in range(5):
            if _create(path, content):
                lock = cls(root, path, content, heartbeat, kind)
                lock.took_over = took_over
                return lock
            seen = _read(path)
            if seen is None:
                continue  # released between our attempt and the read: try again
            raw, holder, mtime = seen
            reason = stale_reason(holder, mtime, stale_after_s=kind.stale_after_s)
            if reason is None:
                what = "open in" if kind is LABELS else "being trained by"
                raise ProjectLocked(f"{root.name} is {what} {describe(holder)}. {kind.refused}", holder)
            log.warning("taking over the lock of %s: %s", root, reason)
            if _take_over(path, raw, content):
                lock = cls(root, path, content, heartbeat, kind)
                lock.took_over = reason
                return lock
            took_over = reason
        raise ProjectLocked(f"{root.name} is being opened by another segdesk right now; try again.")

    # heartbeat: the lock's mtime tells another computer the holder is alive

    def _beat(self) -> None:
        while not self._stop.wait(self.kind.heartbeat_s):
            self.refresh()

    def refresh(self) -> bool:
        """Touch the lock; False (and ``lost``) if it is no longer ours."""
        seen = _read(self.path)
        if seen is None or seen[0] != self._raw:
            if not self.lost:
                log.error("the lock of %s was removed or taken over by another program", self.root)
            self.lost = True
            return False
        try:
            os.utime(self.path)
        except OSError as exc:
            log.warning("could not refresh the lock of %s: %s", self.root, exc)
        return True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        seen = _read(self.path)
        if seen is not None and seen[0] == self._raw:
            try:
                os.unlink(self.path)
            except OSError as exc:
                log.warning("could not remove the lock of %s: %s", self.root, exc)

    def __enter__(self) -> "ProjectLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _encode(content: dict) -> bytes:
    return (json.dumps(content) + "\n").encode("utf-8")


def _create(path: Path, content: dict) -> bool:
    """Create the lock with O_EXCL; False if it exists. LockUnavailable if it cannot be created."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise ProjectError(f"{path.parent} does not exist.") from exc
        raise LockUnavailable(f"Cannot create the lock file in {path.parent}: {exc.strerror or exc}.") from exc
    try:
        os.write(fd, _encode(content))
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise LockUnavailable(f"Cannot write the lock file in {path.parent}: {exc.strerror or exc}.") from exc
    os.close(fd)
    return True


def _take_over(path: Path, stale_raw: bytes, content: dict) -> bool:
    """Replace the stale lock whose bytes were ``stale_raw`` by ours; False if anything changed."""
    mutex = path.with_name(path.name + ".takeover")
    try:
        fd = os.open(mutex, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - mutex.stat().st_mtime > _TAKEOVER_STALE_S:  # a taker crashed mid-way
                os.unlink(mutex)
        except OSError:
            pass
        time.sleep(0.05)
        return False
    except OSError as exc:
        raise LockUnavailable(f"Cannot take over the lock in {path.parent}: {exc.strerror or exc}.") from exc
    try:
        seen = _read(path)
        if seen is not None:
            if seen[0] != stale_raw:
                return False  # replaced since we judged it: judge again
            os.unlink(path)
        return _create(path, content)
    finally:
        os.close(fd)
        try:
            os.unlink(mutex)
        except OSError:
            pass


def holder_of(root: str | os.PathLike, kind: LockKind = LABELS) -> dict | None:
    """What the project's lock of ``kind`` says, or None when unlocked (for messages and tests)."""
    seen = _read(Path(root) / kind.file)
    return None if seen is None else seen[1]
