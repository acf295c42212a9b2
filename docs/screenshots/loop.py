"""Screenshots of the loop on real images, for README (run under Xvfb):

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots/loop.py ../shared/data docs/screenshots

Builds a project from dsb2018_nuclei (CC0), accepts four images from their true masks, lets the
training worker run until it has saved a checkpoint and keeps training, then presses Segment on the
next image (proposal.png), paints a correction (corrected.png) and shows the whole window with the
training panel mid-training (training.png).
"""

import shutil
import sys
import tempfile
from pathlib import Path

import cv2
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

import shots  # docs/screenshots/shots.py, beside this script
from segdesk.app import preload_engine
from segdesk.core.encoding import mask_to_label
from segdesk.core.project import Project
from segdesk.qt.main_window import MainWindow

data, out = Path(sys.argv[1]) / "dsb2018_nuclei", Path(sys.argv[2])
app = QApplication([])
preload_engine()
root = Path(tempfile.mkdtemp()) / "nuclei"
project = Project.create(root, ["nucleus"])
names = sorted(p for p in (data / "images").glob("*.png") if cv2.imread(str(p)).shape[:2] == (256, 256))
project.add_images(names[:12])
for entry in project.images[:4]:
    mask = cv2.imread(str(data / "masks" / Path(entry.source).name), 0)
    project.accept(entry.id, mask_to_label(mask))

w = MainWindow(settings=QSettings(str(root.parent / "s.ini"), QSettings.Format.IniFormat))
w.resize(1600, 1000)
w.show()
w.open_project(root)


def wait(condition, seconds):
    return shots.wait(app, condition, seconds)


def shoot(name):
    shots.settle(app)
    w.grab().save(str(out / name))  # the window as it paints now (a screen grab can lag behind it)


assert wait(lambda: w.models_panel.tree.topLevelItemCount() >= 2, 600), "no checkpoints"
assert wait(lambda: w.loop.active_checkpoint is not None, 60)
target = w.project.images[6].id
w.show_image(target)  # read off the GUI thread: Segment once it is the image on screen
assert wait(lambda: w.current is not None and w.current.image_id == target, 60), "image not shown"
w.segment()
# the proposal is coloured off the GUI thread: it is on screen once the canvas has it
assert wait(lambda: w.current.proposal is not None and w.canvas.proposal is not None, 120), "no proposal"
w.canvas.set_zoom(2.5)
shoot("proposal.png")
doc = w.current.doc
doc.begin_stroke(1, 6)  # background over a false detection
for x in range(60, 110, 4):
    doc.stroke_to(x, 40)
doc.end_stroke()
doc.begin_stroke(2, 5)  # a missed nucleus painted in
for x in range(150, 170, 2):
    doc.stroke_to(x, 200)
doc.end_stroke()
w.canvas.overlay.refresh(None)
shoot("corrected.png")
wait(lambda: False, 20)  # let the plot grow
shoot("training.png")
w.close()
shutil.rmtree(root.parent, ignore_errors=True)
