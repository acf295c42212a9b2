"""Screenshots of display windowing on a CT-like 16-bit DICOM image, for README (run under Xvfb):

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots/windowing.py docs/screenshots

Writes a synthetic chest-CT slice (fake patient, stored as unsigned 12-bit with intercept -1024 and
the file windows 40/400 and -600/1500), opens it in the window and saves:
windowing_file.png (the file's window), windowing_mouse.png (after a Shift + right-drag) and
windowing_lung.png / windowing_bone.png (presets).
"""

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from segdesk.core.project import Project  # noqa: E402
from segdesk.qt.main_window import MainWindow  # noqa: E402
from tests.dicom_factory import ct_file  # noqa: E402


def chest_slice(size: int = 512, seed: int = 0) -> np.ndarray:
    """int16 Hounsfield units of a rough axial chest slice."""
    rng = np.random.default_rng(seed)
    hu = np.full((size, size), -1000.0, np.float32)
    c = size / 2

    def ellipse(cx, cy, rx, ry, value, angle=0):
        cv2.ellipse(hu, (int(cx), int(cy)), (int(rx), int(ry)), angle, 0, 360, float(value), -1)

    ellipse(c, c + 10, 0.44 * size, 0.33 * size, -100)  # subcutaneous fat
    ellipse(c, c + 10, 0.41 * size, 0.30 * size, 45)  # muscle wall
    for side in (-1, 1):
        ellipse(c + side * 0.19 * size, c, 0.15 * size, 0.22 * size, -850, side * 8)  # lungs
    lungs = hu == -850
    texture = cv2.GaussianBlur(rng.normal(0, 1, hu.shape).astype(np.float32), (0, 0), 2)
    vessels = np.abs(texture) < 0.02  # thin branching lines where the smooth noise crosses zero
    hu[lungs & vessels] = 30  # vessels in the lungs
    ellipse(c + 0.04 * size, c + 0.03 * size, 0.12 * size, 0.10 * size, 40, 20)  # heart
    ellipse(c - 0.01 * size, c - 0.08 * size, 0.035 * size, 0.035 * size, 250)  # contrast in the aorta
    ellipse(c, c + 0.24 * size, 0.05 * size, 0.045 * size, 900)  # vertebral body
    ellipse(c, c + 0.24 * size, 0.035 * size, 0.03 * size, 250)  # its marrow
    for k in range(-5, 6):  # ribs along the chest wall
        a = np.deg2rad(90 + k * 25)
        ellipse(c + 0.40 * size * np.cos(a), c + 10 + 0.29 * size * np.sin(a), 8, 6, 1100)
    hu += rng.normal(0, 15, hu.shape)
    return np.rint(hu).astype(np.int16)


out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")
app = QApplication([])
tmp = Path(tempfile.mkdtemp())
ct_file(tmp / "scans" / "slice.dcm", chest_slice(), series_description="Chest 1.0 B30f")
project = Project.create(tmp / "ct", ["lesion"])
project.add_images([tmp / "scans"])

w = MainWindow(settings=QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat))
w.resize(1600, 1000)
w.show()
QTest.qWaitForWindowExposed(w)
w.open_project(project.root)


def settle():
    for _ in range(20):
        app.processEvents()
    QTest.qWait(50)


def shoot(name: str) -> None:
    settle()
    w.grab().save(str(out / name))
    low, high = w.current.window
    print(f"{name}: window {low:g}..{high:g} (level {(low + high) / 2:g}, width {high - low:g})")


shoot("windowing_file.png")
vp = w.canvas.viewport()
start = vp.rect().center()
QTest.mousePress(vp, Qt.MouseButton.RightButton, Qt.KeyboardModifier.ShiftModifier, start)
for i in range(1, 11):  # left (narrower) and up (lower level): a tighter soft-tissue window
    QTest.mouseMove(vp, start + QPoint(-15 * i, -4 * i))
    QTest.qWait(5)
end = start + QPoint(-150, -40)
QTest.mouseRelease(vp, Qt.MouseButton.RightButton, Qt.KeyboardModifier.ShiftModifier, end)
shoot("windowing_mouse.png")
for name, preset in (("windowing_lung.png", "CT lung (-600/1500)"),
                     ("windowing_bone.png", "CT bone (400/1800)")):
    box = w.tools.preset_box
    row = box.findText(preset)
    box.setCurrentIndex(row)
    box.activated.emit(row)
    shoot(name)
w.close()
