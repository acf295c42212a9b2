"""One project, one writer: the lock file, stale-lock takeover, and the CLI refusing while it is held."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segdesk.cli import main
from segdesk.core import project_lock
from segdesk.core.errors import ProjectError
from segdesk.core.project import Project
from segdesk.core.project_lock import (LOCK_FILE, MODELS, LockUnavailable, ProjectLock, ProjectLocked, holder_of,
                                       process_token)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path) -> Path:
    return Project.create(tmp_path / "proj", ["lesion"]).root


def _plant(root: Path, **fields) -> Path:
    """A lock file as another program would have left it."""
    content = {"pid": 1, "host": project_lock._host(), "token_start": "", "owner": "segdesk window",
               "time": time.time(), "token": "x", **fields}
    path = root / LOCK_FILE
    path.write_text(json.dumps(content))
    return path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _holder_process(root: Path) -> subprocess.Popen:
    """A separate process that takes the lock and keeps it until killed."""
    code = ("import sys, time; from segdesk.core.project_lock import ProjectLock; "
            "ProjectLock.acquire(sys.argv[1], owner='segdesk window'); print('locked', flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True,
                             cwd=REPO)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_acquire_refuse_release(root):
    lock = ProjectLock.acquire(root, owner="segdesk window")
    holder = holder_of(root)
    assert holder["pid"] == os.getpid() and holder["owner"] == "segdesk window"
    with pytest.raises(ProjectLocked, match="in this segdesk") as info:
        ProjectLock.acquire(root)
    assert isinstance(info.value, ProjectError) and "Close it there first" in str(info.value)
    lock.release()
    assert not (root / LOCK_FILE).exists()
    lock.release()  # twice is harmless
    with ProjectLock.acquire(root) as again:
        assert again.took_over is None
    assert not (root / LOCK_FILE).exists()


def test_live_process_holds_and_sigkill_leaves_a_stale_lock_that_is_taken_over(root):
    child = _holder_process(root)
    try:
        with pytest.raises(ProjectLocked, match=f"process {child.pid}"):
            ProjectLock.acquire(root)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert holder_of(root)["pid"] == child.pid  # the crash left the lock behind
    with ProjectLock.acquire(root) as lock:
        assert "no longer running" in lock.took_over
        assert holder_of(root)["pid"] == os.getpid()


def test_dead_pid_and_reused_pid_are_stale(root):
    _plant(root, pid=_dead_pid())
    with ProjectLock.acquire(root) as lock:
        assert "no longer running" in lock.took_over
    if process_token(os.getpid()):  # Linux: a live pid that started at another time is another process
        _plant(root, pid=os.getpid(), token_start="other-boot:123")
        with ProjectLock.acquire(root) as lock:
            assert "different program" in lock.took_over


def test_other_host_is_stale_only_without_heartbeat(root):
    path = _plant(root, host="another-computer", pid=4242)
    with pytest.raises(ProjectLocked, match="another-computer"):
        ProjectLock.acquire(root)
    old = time.time() - project_lock.STALE_AFTER_S - 60
    os.utime(path, (old, old))
    with ProjectLock.acquire(root) as lock:
        assert "not refreshed" in lock.took_over


def test_heartbeat_refreshes_and_notices_a_lost_lock(root):
    lock = ProjectLock.acquire(root, heartbeat=False)
    old = time.time() - 1000
    os.utime(root / LOCK_FILE, (old, old))
    assert lock.refresh() and (root / LOCK_FILE).stat().st_mtime > old + 900
    _plant(root, pid=os.getpid(), token="someone-else")  # replaced behind our back
    assert not lock.refresh() and lock.lost
    lock.release()
    assert holder_of(root)["token"] == "someone-else"  # release never deletes another's lock


def test_half_written_lock_file(root):
    path = root / LOCK_FILE
    path.write_bytes(b"")  # a crash between O_EXCL create and write
    with pytest.raises(ProjectLocked):
        ProjectLock.acquire(root)  # young: someone may be writing it right now
    old = time.time() - project_lock.GRACE_S - 5
    os.utime(path, (old, old))
    with ProjectLock.acquire(root) as lock:
        assert "unreadable" in lock.took_over


def test_concurrent_takeover_has_one_winner(root):
    _plant(root, pid=_dead_pid())
    code = ("import sys, time; from segdesk.core.project_lock import ProjectLock, ProjectLocked\n"
            "while time.time() < float(sys.argv[2]): pass\n"
            "try:\n    l = ProjectLock.acquire(sys.argv[1], heartbeat=False); print('got', flush=True)\n"
            "except ProjectLocked: print('locked', flush=True)\n"
            "time.sleep(1)\n")
    start = time.time() + 1.5
    children = [subprocess.Popen([sys.executable, "-c", code, str(root), str(start)], stdout=subprocess.PIPE,
                                 text=True, cwd=REPO) for _ in range(6)]
    answers = [c.communicate(timeout=60)[0].strip() for c in children]
    assert sorted(answers) == ["got"] + ["locked"] * 5, answers
    assert not (root / project_lock.TAKEOVER_FILE).exists()


def test_read_only_folder_and_missing_folder(root, tmp_path, monkeypatch):
    with pytest.raises(ProjectError, match="does not exist"):
        ProjectLock.acquire(tmp_path / "nowhere")
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).endswith(LOCK_FILE):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(LockUnavailable, match="Read-only file system"):
        ProjectLock.acquire(root)


def test_cli_writers_refuse_while_the_window_holds_the_project(root, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    from tests.conftest import write_disc_image

    write_disc_image(images / "a.png")
    lock = ProjectLock.acquire(root, owner="segdesk window")
    try:
        for argv in (["add", root, images], ["import-labels", root, images], ["predict", root]):
            assert main([str(a) for a in argv]) == 1
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and "is open in segdesk window" in err, err
        assert main(["info", str(root)]) == 0  # readers are not blocked
        capsys.readouterr()
    finally:
        lock.release()
    assert main(["add", str(root), str(images)]) == 0
    assert not (root / LOCK_FILE).exists()  # the command released its lock


def test_one_label_writer_and_one_model_writer_at_a_time(root, capsys):
    """The window holds the labels lock, a trainer the models lock; never two of either."""
    labels = ProjectLock.acquire(root, owner="segdesk window")
    models = ProjectLock.acquire(root, owner="segdesk train", kind=MODELS)
    try:
        with pytest.raises(ProjectLocked, match="being trained by segdesk train"):
            ProjectLock.acquire(root, owner="segdesk window", kind=MODELS)
        assert main(["train", str(root), "--steps", "1"]) == 1  # a second trainer
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "being trained by segdesk train" in err, err
        assert holder_of(root, MODELS)["owner"] == "segdesk train"
        assert holder_of(root)["owner"] == "segdesk window"
    finally:
        models.release()
        labels.release()


def test_opening_a_project_leaves_a_trainers_temporaries_in_models(root):
    """A trainer elsewhere may be writing a checkpoint: only the models lock holder cleans models/."""
    inflight = root / "models" / ".segdesk-tmp-inflight.safetensors"
    inflight.write_bytes(b"a checkpoint in flight")
    leftover = root / "labels" / ".segdesk-tmp-crash.png"
    leftover.write_bytes(b"a crash's leftover")
    Project.open(root)
    assert inflight.exists() and not leftover.exists()
    Project.open(root, clean=False).clean_models()
    assert not inflight.exists()


def test_cli_reader_does_not_delete_a_writers_temporary(root):
    tmp = root / "labels" / ".segdesk-tmp-inflight.png"
    tmp.write_bytes(b"a write in flight")
    lock = ProjectLock.acquire(root)
    try:
        assert main(["info", str(root)]) == 0
        assert tmp.exists()
    finally:
        lock.release()
    assert main(["add", str(root), str(root / "nothing")]) in (0, 1)
    assert not tmp.exists()  # a writer with the lock cleans crash leftovers
