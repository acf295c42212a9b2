"""Screenshots of the Click tool on a real image, for README (run under Xvfb):

    xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python docs/screenshots/clicks.py ../shared/data \
        docs/screenshots --image 442c4eb0185698fe7d148c108a46f74abd399aecda2f4f22981a1671cd95dd7d

(about 15 minutes on a busy 2-core machine, most of it training. The image was chosen among 30 H&E
images not accepted as one whose three protocol clicks are of both kinds and raise Dice: 0.811 ->
0.818 -> 0.824 -> 0.835 with the model trained so and the click tilt of b3603dc; 0.811 -> 0.817 ->
0.823 -> 0.828 once a click changes only what touches it, b83e1d8; 0.811 -> 0.843 -> 0.846 -> 0.848
once each answer is fitted to the clicks, 834fc18, and 0.811 -> 0.840 -> 0.843 -> 0.845 with the fit
taken near each click, 3af6090, retaken so: the first, positive, click now fills most of the pale
nucleus, the two negative ones trim spills elsewhere.)

Builds a project of twelve images of one size from a data set (dsb2018_nuclei by default: CC0, the
only set of ../shared/data whose pictures may be copied into the repository; 256 x 320 are its H&E
pictures, harder than the fluorescence ones, on which the model leaves little to click), accepts the first
ten from their true masks and trains a click-reading model on them with ``segdesk train --steps N
--val-every N`` (one validation, at the end: the checkpoint kept is the one trained N steps, not
an early one that validation, which judges automatic proposals only, happened to prefer). A
``--project`` folder that exists is reused (copied, never changed); one that does not is built there.

Then opens the first image not accepted in the window, waits for its proposal and clicks three
times where the clicks protocol says (segdesk.core.clicks.next_click against the true mask: the
middle of the largest error, positive or negative), each a real mouse click on the canvas answered
by the inference worker; zooms to the clicks and shoots clicks.png; then takes the clicks back with
Backspace (the label returns to the proposal) and shoots the same view as clicks_before.png.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
from PySide6.QtCore import QPointF, QRectF, QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

import shots  # docs/screenshots/shots.py, beside this script
from segdesk.app import preload_engine
from segdesk.core import encoding
from segdesk.core.clicks import next_click
from segdesk.core.project import Project
from segdesk.qt.loop_controller import AUTO_START_KEY
from segdesk.qt.main_window import MainWindow
from segdesk.qt.tool_controller import Tool

parser = argparse.ArgumentParser()
parser.add_argument("data", type=Path)
parser.add_argument("out", type=Path)
parser.add_argument("--set", default="dsb2018_nuclei", help="a data set folder with images/ and masks/")
parser.add_argument("--shape", default="256x320", help="only images of this HxW ('' for any)")
parser.add_argument("--class-name", default="nucleus")
parser.add_argument("--project", type=Path, default=Path(tempfile.gettempdir()) / "segdesk-clicks-project")
parser.add_argument("--steps", type=int, default=1200, help="training steps for a new project")
parser.add_argument("--image", help="the stem of an image of the set to click on (added to the copy when "
                                    "not in the project); default: the first image not accepted")
args = parser.parse_args()
data = args.data / args.set
masks = data / "masks"


def true_mask(source: str):
    return (cv2.imread(str(masks / (Path(source).stem + ".png")), cv2.IMREAD_GRAYSCALE) > 0).astype("uint8")


def build(root: Path) -> None:
    shape = tuple(int(v) for v in args.shape.split("x")) if args.shape else None
    images = [p for p in sorted((data / "images").iterdir())
              if (masks / (p.stem + ".png")).is_file()
              and (shape is None or cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape[:2] == shape)][:12]
    project = Project.create(root, [args.class_name])
    added = project.add_images(images).added
    for entry in added[:10]:
        project.accept(entry.id, encoding.mask_to_label(true_mask(entry.source)))
    subprocess.run([sys.executable, "-m", "segdesk", "train", str(root), "--steps", str(args.steps),
                    "--val-every", str(args.steps), "--device", "cpu"], check=True)


if not args.project.exists():
    build(args.project)
work = Path(tempfile.mkdtemp())
root = work / "project"
shutil.copytree(args.project, root)  # the window writes labels and locks: the built project stays as it is
project = Project.open(root)
project.settings[AUTO_START_KEY] = 1000  # no training in the window: the model stays the one shown
if args.image and not any(Path(e.source).stem == args.image for e in project.images):
    project.add_images([next((data / "images").glob(args.image + ".*"))])
project.save()

app = QApplication([])
preload_engine()
w = MainWindow(settings=QSettings(str(work / "s.ini"), QSettings.Format.IniFormat), device="cpu")
w.resize(1400, 900)
w.show()
w.open_project(root)


def wait(condition, seconds):
    return shots.wait(app, condition, seconds)


def shoot(name):
    shots.settle(app)
    w.grab().save(str(args.out / name))


def shown():
    return encoding.label_to_mask(encoding.merge_accept(w.current.doc.label, w.current.proposal))


if args.image:
    wait(lambda: w.current is not None, 60)
    wanted = next(e.id for e in w.project.images if Path(e.source).stem == args.image)
    w.show_image(wanted)
    assert wait(lambda: w.current.image_id == wanted, 60), "the image did not open"
assert wait(lambda: w.current is not None and w.current.proposal is not None, 300), "no proposal"
truth = true_mask(w.project.image(w.current.image_id).source)
w.controller.set_tool(Tool.CLICK)
before = w.current.doc.label.copy()
dice = [encoding.mean_dice(shown(), truth)]
for _ in range(3):
    click = next_click(shown(), truth)
    if click is None:
        break
    answered = []
    w.clicks.answered.connect(answered.append)
    pos = w.canvas.mapFromScene(QPointF(click.x + 0.5, click.y + 0.5))
    button = Qt.MouseButton.LeftButton if click.positive else Qt.MouseButton.RightButton
    QTest.mouseClick(w.canvas.viewport(), button, Qt.KeyboardModifier.NoModifier, pos)
    assert wait(lambda: answered, 60), "the click was not answered"
    w.clicks.answered.disconnect(answered.append)
    dice.append(encoding.mean_dice(shown(), truth))
    print(f"click {len(dice) - 1}: {'positive' if click.positive else 'negative'} at ({click.y}, {click.x}), "
          f"Dice {dice[-2]:.3f} -> {dice[-1]:.3f}; {w.statusBar().currentMessage()}")
points = w.clicks.markers.points()
ys, xs = [p[0] for p in points], [p[1] for p in points]
h, wd = truth.shape
side = max(max(ys) - min(ys), max(xs) - min(xs), min(h, wd) / 3) + 80  # the clicks with room around them
w.canvas.fitInView(QRectF((min(xs) + max(xs) - side) / 2, (min(ys) + max(ys) - side) / 2, side, side),
                   Qt.AspectRatioMode.KeepAspectRatio)
shoot("clicks.png")
for _ in points:
    w.actions_by_name["remove_click"].trigger()  # Backspace (no window manager here to make the window active)
assert len(w.clicks.markers) == 0 and (w.current.doc.label == before).all(), "Backspace did not restore the label"
w.statusBar().showMessage("")
shoot("clicks_before.png")
print(f"Dice of the shown mask: {' -> '.join(f'{d:.3f}' for d in dice)}")
w.close()
shutil.rmtree(work, ignore_errors=True)
