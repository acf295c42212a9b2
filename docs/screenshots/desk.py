"""Screenshot of the annotation desk on real images, for README (run under Xvfb).

    xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots/desk.py ../shared/data OUT.png
"""

import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

from segdesk.core.project import Project
from segdesk.qt.main_window import MainWindow

data, out = Path(sys.argv[1]), Path(sys.argv[2])
root = Path(tempfile.mkdtemp()) / "nuclei"
project = Project.create(root, ["nucleus", "debris"])
images = sorted((data / "dsb2018_nuclei" / "images").glob("*.png"))
picks = [p for p in images if cv2.imread(str(p)).shape[:2] == (520, 696)][:6]
project.add_images(picks)
app = QApplication([])
w = MainWindow(settings=QSettings(str(root.parent / "s.ini"), QSettings.Format.IniFormat))
w.resize(1500, 900)
w.show()
w.open_project(root)
truth = cv2.imread(str(data / "dsb2018_nuclei" / "masks" / Path(w.project.source_path(w.project.images[0])).name), 0)
# a half-done correction: nuclei painted on the left half, background brushed around them
doc = w.current.doc
label = np.zeros_like(doc.label)
label[:, : label.shape[1] // 2] = np.where(truth[:, : label.shape[1] // 2] > 0, 2, 0)
doc.set_label(label)
doc.begin_stroke(1, 12)
for x in range(40, 300, 10):
    doc.stroke_to(x, 470 + 20 * np.sin(x / 40))
doc.end_stroke()
w.canvas.overlay.refresh(None)
w.canvas.fit()


def shoot():
    app.primaryScreen().grabWindow(0).save(str(out))
    w.close()
    shutil.rmtree(root.parent, ignore_errors=True)
    app.quit()


QTimer.singleShot(1500, shoot)
app.exec()
