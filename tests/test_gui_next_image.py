"""Next image by uncertainty in the app: the inference worker scores upcoming images in the
background, and with "least sure first" accept goes on to the image scored least sure."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from segdesk.core import next_image
from segdesk.core.project import Project, write_proposal
from segdesk.ml.checkpoints import CheckpointStore
from segdesk.ml.config import TrainConfig
from segdesk.ml.normalise import NORMALISATION
from segdesk.qt.inference_worker import InferenceWorker
from segdesk.qt.main_window import MainWindow
from tests.conftest import show_window, write_disc_image

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def messages(monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _p, t, m, *a, **k: shown.append((t, m)))
    return shown


def make(tmp_path, n: int, order: str) -> tuple[Project, str]:
    """A project of ``n`` disc images with one tiny proposing checkpoint, no training."""
    import torch

    from segdesk.ml.unet import UNet

    for i in range(n):
        write_disc_image(tmp_path / f"img{i}.png", seed=i)
    project = Project.create(tmp_path / "proj", ["disc"])
    project.add_images([tmp_path / f"img{i}.png" for i in range(n)])
    project.settings["auto_train_after"] = 1000  # no training in these tests
    project.settings[next_image.ORDER_KEY] = order
    project.save()
    torch.manual_seed(0)
    model = UNet(n_outputs=2, depth=2, base_width=4)
    meta = {"arch": model.arch_dict(), "classes": ["disc"], "normalisation": NORMALISATION,
            "working_scale": 1.0, "step": 1, "postprocess": {"version": 1, "classes": {}, "propose": True}}
    return project, CheckpointStore(project.root / "models").save(model.state_dict(), meta)


def scored_by(project: Project, checkpoint: str) -> set[str]:
    return {e.id for e in project.images
            if (m := project.proposal_meta(e.id)) and m.get("checkpoint") == checkpoint and "uncertainty" in m}


@pytest.mark.parametrize("order", [next_image.UNCERTAIN, next_image.IN_ORDER])
def test_the_worker_scores_upcoming_images_only_for_least_sure_first(qtbot, tmp_path, order):
    project, checkpoint = make(tmp_path, 3, order)
    worker = InferenceWorker(project.root / "models", project.root / "proposals", project.n_classes, device="cpu")
    scored, shown = [], []
    worker.scored.connect(lambda *a: scored.append(a))
    worker.prediction_ready.connect(lambda *a: shown.append(a))
    worker.load_checkpoint(checkpoint)  # scouting is planned and run on later turns of the event loop
    if order == next_image.IN_ORDER:
        worker.plan_scouting()
        assert not worker._scout_queue
        return
    qtbot.waitUntil(lambda: len(scored) == 3, timeout=60_000)
    assert scored_by(project, checkpoint) == {e.id for e in project.images}
    assert all(0.0 <= u <= 0.5 and c == checkpoint for _, c, u in scored)
    assert not shown  # scouted proposals are stored, never sent as answers
    assert {i: u for i, _, u in scored} == {e.id: project.proposal_meta(e.id)["uncertainty"] for e in project.images}


def test_least_sure_first_goes_on_to_the_image_with_the_highest_stored_uncertainty(qtbot, tmp_path, messages):
    project, checkpoint = make(tmp_path, 4, next_image.UNCERTAIN)
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), device="cpu",
                   train_config=TrainConfig(depth=2, base_width=4, crop_size=32))
    show_window(qtbot, w)  # key presses reach only the active window
    assert w.open_project(project.root)
    qtbot.waitUntil(lambda: w.current is not None, timeout=20_000)  # the image is read off the GUI thread
    assert w.image_list.order.currentData() == next_image.UNCERTAIN  # the project's setting is shown
    qtbot.waitUntil(lambda: w.loop.active_checkpoint == checkpoint, timeout=120_000)
    first = w.current.image_id
    ids = [e.id for e in project.images]
    assert first == ids[0]
    # the worker scores the upcoming images in the background; the list shows the scores
    qtbot.waitUntil(lambda: scored_by(project, checkpoint) >= set(ids[1:]), timeout=120_000)
    qtbot.waitUntil(lambda: "unsure" in w.image_list.list.item(1).text(), timeout=20_000)

    # set by hand: the choice is deterministic (0.5 is the highest a one-class model can score, so
    # a late prefetch answer rewriting another image's score cannot outrank it)
    chosen = {ids[1]: 0.01, ids[2]: 0.5, ids[3]: 0.02}
    label = np.ones(project.images[0].shape, np.uint8)
    for image_id, value in chosen.items():
        write_proposal(project.root / "proposals", image_id, label, checkpoint, uncertainty=value)
    # the window reads stored scores off the GUI thread every few seconds: once the list shows them
    qtbot.waitUntil(lambda: all(w.image_list.list.item(ids.index(i)).text().endswith(f" · unsure {v:.2f}")
                                for i, v in chosen.items()), timeout=20_000)
    w.current.doc.set_label(label)
    # accept and go on: the next image is read, and the accept written, off the GUI thread
    with qtbot.waitSignals([w.session.image_shown, w.session.image_accepted], timeout=20_000):
        QTest.keyClick(w, Qt.Key.Key_Return)
    assert w.project.image(first).status == "accepted"
    assert w.current.image_id == ids[2]  # the least sure, not the next in the list
    qtbot.waitUntil(lambda: w.current.proposal is not None, timeout=60_000)  # and its proposal is shown
    # the list shows the stored scores (the open image's own proposal has rewritten its score)

    def shows_stored_score():
        stored = project.proposal_meta(ids[2])["uncertainty"]
        return w.image_list.list.item(2).text().endswith(f" · unsure {stored:.2f}")

    qtbot.waitUntil(shows_stored_score, timeout=20_000)
    assert "unsure" not in w.image_list.list.item(0).text()  # accepted

    # back to "in order": the choice is stored in the project and Next image steps through the list
    w.image_list.order.setCurrentIndex(w.image_list.order.findData(next_image.IN_ORDER))
    assert w.saver.flush()  # the setting is written off the GUI thread
    assert Project.open(project.root).settings[next_image.ORDER_KEY] == next_image.IN_ORDER
    assert "unsure" not in w.image_list.list.item(1).text()
    with qtbot.waitSignal(w.session.image_shown, timeout=20_000):
        QTest.keyClick(w, Qt.Key.Key_PageDown)
    assert w.current.image_id == ids[3]
    w.close()
    assert not messages, messages
