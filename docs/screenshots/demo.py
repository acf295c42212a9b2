"""README's screenshot: the bundled demo as a new user sees it (run under Xvfb):

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots/demo.py docs/screenshots/demo.png

A fresh demo copy (``segdesk demo --into``), opened as ``segdesk demo`` opens it; training starts by
itself (three images are accepted); once it has judged its model twice (the bundled model stays in
use until one of its own does better), the first image to label is shown with its proposal.
"""

import shutil
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

import shots  # docs/screenshots/shots.py, beside this script
from segdesk import demo
from segdesk.app import preload_engine
from segdesk.qt.main_window import MainWindow

out = Path(sys.argv[1])
app = QApplication([])
preload_engine()
work = Path(tempfile.mkdtemp())
root = demo.create(work / "demo")
w = MainWindow(settings=QSettings(str(work / "s.ini"), QSettings.Format.IniFormat))
w.resize(1400, 880)
w.show()
w.open_project(root)


def wait(condition, seconds):
    return shots.wait(app, condition, seconds)


assert wait(lambda: w.training_panel.dice.text() != "–", 600), "training judged no model"
first_dice = w.training_panel.dice.text()
wait(lambda: w.training_panel.dice.text() != first_dice, 300)  # two validations on the plot
first_new = next(e.id for e in w.project.images if e.id not in w.project.accepted_ids())
w.show_image(first_new)
assert wait(lambda: w.current is not None and w.current.image_id == first_new, 60), "image not shown"
w.segment()
assert wait(lambda: w.status.proposal.text().startswith("proposal from"), 120), "no proposal"
shots.settle(app)
w.grab().save(str(out))
w.close()
shutil.rmtree(work, ignore_errors=True)
