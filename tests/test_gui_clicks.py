"""The Click tool in the real window (issue 13): clicks correct the proposal, Backspace and Ctrl+Z
take a click back, a click is answered while training runs, accept stores what the clicks made,
and a checkpoint that does not read clicks still proposes while the tool says it cannot.

The project is a copy of conftest.click_model's (a tiny U-Net that learned clicks on two identical
discs of which only the first is the class) with three new images whose true masks the test keeps.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QPointF, QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from segdesk.core import encoding
from segdesk.core.clicks import next_click
from segdesk.core.project import Project
from segdesk.ml.config import TrainConfig
from segdesk.qt.inference_worker import NO_CLICKS
from segdesk.qt.loop_controller import AUTO_START_KEY
from segdesk.qt.main_window import MainWindow
from segdesk.qt.tool_controller import Tool
from tests.conftest import show_window
from tests.synthetic import make_choice_sample

# as conftest.click_model trained it; patience so that training started here runs on
CONFIG = TrainConfig(crop_size=64, batch_size=4, val_every=100, base_width=8, working_scale=1.0, patience=1000)


@pytest.fixture
def messages(monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _p, t, m, *a, **k: shown.append((t, m)))
    return shown


def copy_project(click_model: Path, tmp_path: Path, train_after: int = 1000, seed: int = 7):
    """A copy of the click model's project with three new (not accepted) two-disc images; training
    starts by itself only after ``train_after`` accepts. Returns (root, true class masks by file name)."""
    shutil.copytree(click_model.parent, tmp_path / "copy")  # the project and its source images
    root = tmp_path / "copy" / click_model.name
    source = tmp_path / "new"
    source.mkdir()
    rng = np.random.default_rng(seed)
    truths = {}
    for i in range(3):
        image, mask = make_choice_sample(rng)
        cv2.imwrite(str(source / f"new{i}.png"), image)
        truths[f"new{i}.png"] = mask
    project = Project.open(root)
    project.add_images([source])
    project.settings[AUTO_START_KEY] = train_after
    project.save()
    return root, truths


def open_window(qtbot, tmp_path, root, messages=None) -> MainWindow:
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                   train_config=CONFIG, device="cpu")
    show_window(qtbot, w)
    assert w.open_project(root)
    # the first image not accepted opens with its proposal once the model has loaded
    qtbot.waitUntil(lambda: w.current is not None and w.current.proposal is not None, timeout=60_000)
    return w


def shown(w: MainWindow) -> np.ndarray:
    """The class mask on screen: the label over the proposal, as accept stores it."""
    return encoding.label_to_mask(encoding.merge_accept(w.current.doc.label, w.current.proposal))


def truth_of(w: MainWindow, truths: dict) -> np.ndarray:
    return truths[Path(w.project.image(w.current.image_id).source).name]


def truth_the_proposal_missed(w: MainWindow, truths: dict) -> np.ndarray:
    """The disc the user wants: the generated class (the first disc) unless the proposal shows
    exactly that one, then the other disc. The model can only guess between two identical discs,
    and a right guess would leave nothing to click."""
    first = truth_of(w, truths)
    pixels = w.current.image.pixels.astype(np.float32)
    bright = (cv2.GaussianBlur(pixels if pixels.ndim == 2 else pixels.mean(axis=2), (5, 5), 0) > 115)
    n, regions = cv2.connectedComponents(bright.astype(np.uint8))
    others = [k for k in range(1, n) if not (first[regions == k] > 0).any()]
    if not others or encoding.mean_dice(shown(w), first) < 0.9:
        return first
    other = max(others, key=lambda k: int((regions == k).sum()))
    return (regions == other).astype(np.uint8)


def click_at(w: MainWindow, y: int, x: int, button=Qt.MouseButton.LeftButton,
             modifier=Qt.KeyboardModifier.NoModifier) -> None:
    """A real mouse click on the canvas at image pixel (y, x)."""
    pos = w.canvas.mapFromScene(QPointF(x + 0.5, y + 0.5))
    QTest.mouseClick(w.canvas.viewport(), button, modifier, pos)


def protocol_click(qtbot, w: MainWindow, truth: np.ndarray, shift_for_negative: bool = False) -> bool:
    """Click where DESIGN.md's clicks protocol says (the largest error, positive or negative) and wait
    for the answer; False when the mask on screen is already right."""
    click = next_click(shown(w), truth)
    if click is None:
        return False
    if click.positive:
        button, modifier = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    elif shift_for_negative:
        button, modifier = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier
    else:
        button, modifier = Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier
    with qtbot.waitSignal(w.clicks.answered, timeout=60_000):
        click_at(w, int(click.y), int(click.x), button, modifier)
    assert w.clicks.clicks[-1].positive == click.positive
    return True


def a_useful_click(w: MainWindow, truth: np.ndarray) -> tuple[int, int, object]:
    """(y, x, mouse button) of the protocol's click, or a positive one on the true disc when the
    proposal is right already."""
    click = next_click(shown(w), truth) or next_click(np.zeros_like(truth), truth)
    return int(click.y), int(click.x), Qt.MouseButton.LeftButton if click.positive else Qt.MouseButton.RightButton


def choose_click_tool(w: MainWindow) -> None:
    QTest.keyClick(w, Qt.Key.Key_C)
    assert w.controller.tool == Tool.CLICK
    assert w.tools.click_hint.isVisible()


def test_clicks_move_the_proposal_toward_the_truth_and_accept_stores_them(qtbot, tmp_path, click_model, messages):
    root, truths = copy_project(click_model, tmp_path)
    w = open_window(qtbot, tmp_path, root)
    choose_click_tool(w)
    image_id, truth = w.current.image_id, truth_the_proposal_missed(w, truths)
    before = encoding.mean_dice(shown(w), truth)
    click_at(w, -5, -5)  # outside the image: ignored
    assert w.clicks.clicks == [] and len(w.clicks.markers) == 0 and not w.clicks.pending
    dice = [before]
    while dice[-1] < 0.9 and len(dice) <= 3:  # the clicks protocol: until Dice 0.90 (here at most 3 clicks)
        # a negative first click is a Shift+click (the Backspace test right-clicks)
        assert protocol_click(qtbot, w, truth, shift_for_negative=len(dice) == 1)
        dice.append(encoding.mean_dice(shown(w), truth))
        assert len(w.clicks.markers) == len(w.clicks.clicks) == len(dice) - 1
        assert "click answered in" in w.statusBar().currentMessage()
    assert len(dice) > 1, "the proposal was right already: the test image does not test clicks"
    assert dice[-1] > before + 0.15, dice  # the two discs: a click says which one is meant
    # only what the clicks changed became label (the model's window is the whole image here): the
    # rest still shows the proposal
    labelled = w.current.doc.label != encoding.UNLABELLED
    assert labelled.any() and labelled.sum() < labelled.size / 4
    # where the clicks answered, the proposal underneath no longer shows (not even its edge)
    proposal = w.canvas.proposal
    for y, x in np.argwhere(labelled)[:: max(1, int(labelled.sum()) // 50)]:
        assert proposal.pixel_colour(int(x), int(y)).alpha() == 0

    # a brush correction on top of the clicks' result, then Enter stores what is shown
    QTest.keyClick(w, Qt.Key.Key_B)
    w.controller.set_value(encoding.BACKGROUND)
    click_at(w, 1, 1)
    expected = encoding.merge_accept(w.current.doc.label, w.current.proposal)
    assert expected[1, 1] == encoding.BACKGROUND
    with qtbot.waitSignal(w.session.image_accepted, timeout=20_000):
        QTest.keyClick(w, Qt.Key.Key_Return)
    assert len(w.clicks.markers) == 0 and w.clicks.clicks == []
    assert np.array_equal(Project.open(root, clean=False).read_label(image_id), expected)
    assert not messages


def test_backspace_and_ctrl_z_take_a_click_back(qtbot, tmp_path, click_model, messages):
    root, truths = copy_project(click_model, tmp_path)
    w = open_window(qtbot, tmp_path, root)
    choose_click_tool(w)
    truth = truth_of(w, truths)
    doc = w.current.doc
    start = doc.label.copy()
    first = a_useful_click(w, truth)
    with qtbot.waitSignal(w.clicks.answered, timeout=60_000):
        click_at(w, *first)
    after_first = doc.label.copy()
    with qtbot.waitSignal(w.clicks.answered, timeout=60_000):
        click_at(w, 2, 2, Qt.MouseButton.RightButton)  # "not the class" on the background corner
    assert len(w.clicks.markers) == 2

    QTest.keyClick(w, Qt.Key.Key_Backspace)  # the second click's change was the last step: undone
    assert len(w.clicks.markers) == 1 and len(w.clicks.clicks) == 1
    assert np.array_equal(doc.label, after_first)

    # a brush stroke after the first click; Backspace then gives the pixels the click changed back
    # their old values, and the stroke stays
    QTest.keyClick(w, Qt.Key.Key_B)
    w.controller.set_value(encoding.class_value(0))
    click_at(w, 60, 60)
    stroke = doc.label != after_first
    assert stroke.any() and (doc.label[stroke] == encoding.class_value(0)).all()
    QTest.keyClick(w, Qt.Key.Key_Backspace)
    assert len(w.clicks.markers) == 0 and w.clicks.clicks == []
    assert (after_first != start).any()
    assert np.array_equal(doc.label[~stroke], start[~stroke])
    assert (doc.label[stroke] == encoding.class_value(0)).all()
    QTest.keyClick(w, Qt.Key.Key_Backspace)  # nothing left to remove: said so, nothing changes
    assert "No click" in w.statusBar().currentMessage()

    # Ctrl+Z right after a click undoes its change and takes its marker away
    choose_click_tool(w)
    label = doc.label.copy()
    with qtbot.waitSignal(w.clicks.answered, timeout=60_000):
        click_at(w, *first)
    assert len(w.clicks.markers) == 1 and not np.array_equal(doc.label, label)
    QTest.keyClick(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(doc.label, label) and len(w.clicks.markers) == 0 and w.clicks.clicks == []
    assert not messages


def test_a_click_while_training_runs_is_answered(qtbot, tmp_path, click_model, messages):
    root, truths = copy_project(click_model, tmp_path)
    w = open_window(qtbot, tmp_path, root)
    steps = []
    w.loop.progress.connect(lambda p: steps.append(p.get("step", 0)))
    w.loop.start_training()
    qtbot.waitUntil(lambda: any(s and s > 0 for s in steps), timeout=120_000)  # it is stepping
    assert w.loop.training_running
    choose_click_tool(w)
    truth = truth_of(w, truths)
    with qtbot.waitSignal(w.clicks.answered, timeout=60_000):
        click_at(w, *a_useful_click(w, truth))
    assert w.loop.training_running  # answered between two steps; training goes on
    assert "click answered in" in w.statusBar().currentMessage()
    assert not messages


def test_a_checkpoint_without_click_inputs_proposes_and_the_click_tool_says_it_cannot(
        qtbot, tmp_path, click_model, messages):
    from segdesk.demo import _install_model, demo_model_dir

    root, _ = copy_project(click_model, tmp_path)
    _install_model(demo_model_dir(), root / "models")  # the bundled nuclei model, from before clicks
    w = open_window(qtbot, tmp_path, root)  # it proposes
    meta = next(m for m in w.loop.checkpoints if m["id"] == w.loop.active_checkpoint)
    assert meta.get("prompts") != "clicks"
    label = w.current.doc.label.copy()
    choose_click_tool(w)
    assert w.statusBar().currentMessage() == NO_CLICKS  # said when the tool is chosen...
    w.statusBar().clearMessage()
    click_at(w, 30, 30)  # ...and on each click
    assert w.statusBar().currentMessage() == NO_CLICKS
    assert w.clicks.clicks == [] and len(w.clicks.markers) == 0 and not w.clicks.pending
    assert np.array_equal(w.current.doc.label, label)
    assert not messages


def test_a_new_click_supersedes_a_pending_one(qtbot, tmp_path, click_model, messages):
    """Two clicks in one go: the first one's answer is never applied; the second's carries both."""
    root, truths = copy_project(click_model, tmp_path)
    w = open_window(qtbot, tmp_path, root)
    choose_click_tool(w)
    doc = w.current.doc
    answers = []
    w.clicks.answered.connect(answers.append)
    with qtbot.waitSignal(w.clicks.answered, timeout=60_000):
        click_at(w, *a_useful_click(w, truth_of(w, truths)))
        click_at(w, 2, 2, Qt.MouseButton.RightButton)  # before the first is answered
    assert len(w.clicks.clicks) == 2 and not w.clicks.pending
    assert len(answers) == 1 and len(doc.history) == 1  # one answer, one undo step
    QTest.keyClick(w, Qt.Key.Key_Backspace)  # its change was both clicks' answer: undone...
    assert not doc.history.can_undo
    qtbot.waitUntil(lambda: len(answers) == 2, timeout=60_000)  # ...and the first click is asked again
    assert len(w.clicks.clicks) == 1 and len(doc.history) == 1
    assert not messages


def test_without_a_model_the_click_tool_says_what_is_needed(qtbot, tmp_path, messages):
    from tests.conftest import disc_project

    project = disc_project(tmp_path, ["disc"])
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                   train_config=CONFIG, device="cpu")
    show_window(qtbot, w)
    assert w.open_project(project.root)
    qtbot.waitUntil(lambda: w.current is not None, timeout=20_000)
    choose_click_tool(w)
    told = "No trained model yet: accept an image and training starts by itself. Clicks need one."
    assert w.statusBar().currentMessage() == told
    w.statusBar().clearMessage()
    label = w.current.doc.label.copy()
    click_at(w, 20, 20)
    assert w.statusBar().currentMessage() == told
    assert w.clicks.clicks == [] and len(w.clicks.markers) == 0 and np.array_equal(w.current.doc.label, label)
    assert not messages
