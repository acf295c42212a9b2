"""One project, two windows: the second is refused with a message; a crashed window's lock is taken over."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox

from segdesk.core.project import Project
from segdesk.core.project_lock import LOCK_FILE, holder_of
from segdesk.qt.main_window import MainWindow
from tests.conftest import write_disc_image


@pytest.fixture
def messages(monkeypatch):
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _p, t, m, *a, **k: shown.append((t, m)))
    return shown


def _project(tmp_path: Path, name: str) -> Path:
    images = tmp_path / f"{name}-images"
    images.mkdir()
    write_disc_image(images / "a.png")
    p = Project.create(tmp_path / name, ["lesion"])
    p.add_images([images])
    p.settings["auto_train_after"] = 1000
    p.save()
    return p.root


def _window(qtbot, tmp_path) -> MainWindow:
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), device="cpu")
    qtbot.addWidget(w)
    return w


def test_second_window_is_refused_and_keeps_its_own_project(qtbot, tmp_path, messages):
    a, b = _project(tmp_path, "a"), _project(tmp_path, "b")
    w1, w2 = _window(qtbot, tmp_path), _window(qtbot, tmp_path)
    assert w1.open_project(a)
    assert holder_of(a)["owner"] == "segdesk window"
    assert w2.open_project(b)
    qtbot.waitUntil(lambda: w2.current is not None, timeout=20_000)  # the image is read off the GUI thread
    in_flight = a / "labels" / ".segdesk-tmp-inflight.png"
    in_flight.write_bytes(b"w1 is writing this")

    assert not w2.open_project(a)
    title, message = messages[-1]
    assert title == "Cannot open project" and "is open in segdesk window in this segdesk" in message
    assert "Close it there first" in message
    assert w2.project.root == b and w2.current is not None and w2.guard.root == b
    assert holder_of(b) is not None
    assert in_flight.exists()  # the refused window deleted nothing of the other's

    w1.close()
    assert holder_of(a) is None
    assert w2.open_project(a)
    assert holder_of(b) is None and holder_of(a) is not None  # the lock moved with the project
    assert not in_flight.exists()  # crash leftovers are cleaned by the new holder
    w2.close()
    assert holder_of(a) is None


def test_lock_of_a_crashed_window_is_taken_over(qtbot, tmp_path, messages):
    root = _project(tmp_path, "c")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": __import__("socket").gethostname(),
                                              "owner": "segdesk window", "time": time.time(), "token": "t"}))
    leftover = root / "labels" / ".segdesk-tmp-crash.png"
    leftover.write_bytes(b"half")
    w = _window(qtbot, tmp_path)
    assert w.open_project(root)
    assert not messages
    assert "Took over" in w.statusBar().currentMessage() and "no longer running" in w.statusBar().currentMessage()
    assert holder_of(root)["token"] != "t" and not leftover.exists()
    w.close()
    assert holder_of(root) is None
