"""An accept is durable once the window says "accepted", though it is written off the GUI thread:
a real window in another process paints, accepts, reports the accept, and is killed (SIGKILL, no
clean-up) at once; the label file and project.json on disk say accepted."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segdesk.core.project import STATUS_ACCEPTED, Project
from tests.conftest import disc_project

REPO = Path(__file__).resolve().parents[1]

# The child: the real main window (offscreen) on the project; it paints one stroke on the first
# image, saves what accepting must store, accepts, and prints "accepted <id>" when the window
# reports it; then it keeps running until it is killed.
CHILD = r"""
import logging, os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
import numpy as np
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
from segdesk.core import encoding
from segdesk.qt.main_window import MainWindow

root, out = sys.argv[1], sys.argv[2]
app = QApplication([])
w = MainWindow(settings=QSettings(os.path.join(out, "s.ini"), QSettings.Format.IniFormat), device="cpu")
w.show()

def accept(image_id):
    doc = w.current.doc
    doc.begin_stroke(2, 4)
    doc.stroke_to(20, 20)
    doc.stroke_to(30, 24)
    doc.end_stroke()
    np.save(os.path.join(out, "expected.npy"), encoding.merge_accept(doc.label))
    w.session.image_shown.disconnect()
    w.accept_current()

w.session.image_shown.connect(accept)
w.session.image_accepted.connect(lambda image_id: print("accepted", image_id, flush=True))
w.open_project(root)
app.exec()
"""


def read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    """The child's next line of output; fails the test if none comes within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            return proc.stdout.readline()
    pytest.fail("the window never reported the accept")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_window_killed_right_after_accepted_is_shown_leaves_the_accept_on_disk(tmp_path):
    project = disc_project(tmp_path, ["disc"], n_images=2)
    project.settings["auto_train_after"] = 1000  # no training: this test is about the accept
    project.save()
    first = project.images[0].id
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "child.log", "w")  # a file, not a pipe nobody reads
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(project.root), str(tmp_path)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = ""
        while not line.startswith("accepted"):
            line = read_line(child, 120)
            assert line or child.poll() is None, (tmp_path / "child.log").read_text()
        child.send_signal(signal.SIGKILL)  # at once: no closing, no flushing
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        log.close()
    assert line.split() == ["accepted", first]

    on_disk = Project.open(project.root, clean=False)
    assert on_disk.image(first).status == STATUS_ACCEPTED and on_disk.image(first).accepted_at is not None
    expected = np.load(tmp_path / "expected.npy")
    assert np.count_nonzero(expected == 2) > 20  # the stroke is in it
    assert np.array_equal(on_disk.read_label(first), expected)
