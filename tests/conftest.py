import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny tensors run fastest on one thread, and a busy shared CPU makes OpenMP's spinning
    threads crawl (measured: 4 s on 1 thread vs up to 290 s on 2 for the training fixture)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def click_model(tmp_path_factory) -> Path:
    """A project whose current checkpoint has learned clicks: trained (600 steps, ~30 s on one core,
    once per session) on tests/synthetic.py's two-disc images, where only a click tells which disc
    is meant. Its models/ is read by the tests; copy the project before training it further."""
    import torch

    from segdesk.ml.config import TrainConfig
    from segdesk.ml.train import Trainer
    from tests.synthetic import make_choice_project

    project = make_choice_project(tmp_path_factory.mktemp("clicks"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainConfig(crop_size=64, batch_size=4, val_every=100, base_width=8, working_scale=1.0)
        Trainer(project.root, config, device="cpu").run(max_steps=600)
    finally:
        torch.set_num_threads(before)
    return project.root


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def write_disc_image(path: Path, size: tuple[int, int] = (48, 64), seed: int = 0) -> np.ndarray:
    """A gray image with one bright disc on noise; returns the true mask (0/1)."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = rng.normal(60, 10, (h, w)).clip(0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cy, cx, r = rng.integers(h // 3, 2 * h // 3), rng.integers(w // 3, 2 * w // 3), rng.integers(6, 12)
    cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)
    img[mask == 1] = 200
    cv2.imwrite(str(path), img)
    return mask


@pytest.fixture
def discs(tmp_path):
    """A benchmark data folder: five disc images with their masks, and an image without one."""
    data = tmp_path / "discs"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(5):
        mask = write_disc_image(data / "images" / f"d{i}.png", (40, 48), seed=i)
        cv2.imwrite(str(data / "masks" / f"d{i}.png"), mask)
    cv2.imwrite(str(data / "images" / "no_mask.png"), np.zeros((8, 8), np.uint8))  # ignored
    return data


def disc_project(tmp_path: Path, classes: list[str], n_images: int = 3):
    """A project of ``n_images`` generated disc images (``img0.png``...) with ``classes``."""
    from segdesk.core.project import Project

    images = tmp_path / "images"
    images.mkdir()
    for i in range(n_images):
        write_disc_image(images / f"img{i}.png", seed=i)
    project = Project.create(tmp_path / "proj", classes)
    assert len(project.add_images([images]).added) == n_images
    return project


def keeper_with_a_stroke(tmp_path: Path):
    """A one-image project, a SaveKeeper on it and the image's label document holding one brush
    stroke not yet handed to the keeper. Returns (project, image id, keeper, document)."""
    from segdesk.core.label_document import LabelDocument
    from segdesk.core.project import Project
    from segdesk.qt.save_keeper import SaveKeeper

    write_disc_image(tmp_path / "a.png")
    project = Project.create(tmp_path / "proj", ["disc"])
    project.add_images([tmp_path / "a.png"])
    image_id = project.images[0].id
    keeper = SaveKeeper()
    keeper.set_project(project)
    doc = LabelDocument(np.zeros((48, 64), np.uint8))
    keeper.opened(image_id, doc, on_disk=True)
    doc.begin_stroke(2, 3)  # the class, radius 3
    doc.stroke_to(12, 12)
    doc.end_stroke()
    return project, image_id, keeper, doc


def show_window(qtbot, window, active: bool = True):
    """Show a real window and wait until it is exposed and, with ``active``, the active window
    (shortcuts and key presses reach only the active window). Returns the window."""
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window, timeout=20_000)
    if active:
        window.activateWindow()
        qtbot.waitUntil(window.isActiveWindow, timeout=20_000)
    return window


@pytest.fixture(autouse=True)
def event_loops_still_run():
    """Fail the test that leaves Qt unable to run an event loop: a stray quit() delivered after
    exec() returned makes every later QEventLoop.exec return -1 at once, so no queued signal is
    delivered and every later GUI test times out far from the cause."""
    yield
    from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer

    if QCoreApplication.instance() is None:
        return
    loop = QEventLoop()
    QTimer.singleShot(0, loop.quit)
    assert loop.exec() == 0, "this test left a quit request behind: Qt's event loops no longer run"


@pytest.fixture(scope="session", autouse=True)
def no_worker_thread_outlives_the_session():
    """As the app does before it exits: wait for worker threads that missed their stop time-out
    (segdesk.qt.worker_thread keeps them), so none is destroyed while it runs."""
    yield
    import sys

    if "segdesk.qt.worker_thread" in sys.modules:
        from segdesk.qt.worker_thread import wait_for_stragglers

        assert wait_for_stragglers(120_000), "a worker thread was still running at the end of the tests"


def drag(window, points) -> None:
    """Drag the mouse with the left button through ``points`` (image pixels) on the window's canvas,
    as a user paints a stroke with the current tool."""
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtTest import QTest

    vp = window.canvas.viewport()
    window.canvas.centerOn(QPointF(points[0][0] + 0.5, points[0][1] + 0.5))
    pos = [window.canvas.mapFromScene(QPointF(x + 0.5, y + 0.5)) for x, y in points]
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos[0])
    for p in pos[1:]:
        QTest.mouseMove(vp, p)
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos[-1])
