"""Text in the main window reads whole: model versions columns, status bar messages, device name."""

from __future__ import annotations

import time

import pytest
from PySide6.QtCore import QSettings, QSize

from segdesk.qt.main_window import MainWindow
from tests.conftest import show_window


@pytest.fixture
def window(qtbot, tmp_path) -> MainWindow:
    w = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    show_window(qtbot, w, active=False)
    return w


def checkpoints(n: int) -> list[dict]:
    """Metadata as the checkpoint store lists it, oldest first; the last one withholds proposals."""
    now = time.time()
    metas = [{"id": f"{i:04d}", "created": now - 60 * (n - i), "val_dice": 0.5 + i / 100,
              "n_train_images": 100 * i, "postprocess": None} for i in range(1, n + 1)]
    metas[-1]["postprocess"] = {"propose": False}
    metas[-2]["val_dice"] = None
    return metas


@pytest.mark.parametrize("active, newest", [("0012", "0012  ◀ learning"), ("0011", "0012  (learning)")])
def test_model_versions_columns_are_whole_at_the_default_size(qtbot, window, active, newest):
    assert window.size() == QSize(1500, 950)  # the default size the app opens with
    panel = window.models_panel
    panel.set_checkpoints(checkpoints(12), active)
    tree, header = panel.tree, panel.tree.header()
    assert [tree.headerItem().text(c) for c in range(tree.columnCount())] == ["Model", "Saved", "Dice", "Labels"]

    def columns_whole():
        assert not tree.horizontalScrollBar().isVisible(), "the columns do not fit the panel"
        for col in range(tree.columnCount()):
            width, left = header.sectionSize(col), header.sectionViewportPosition(col)
            assert width >= header.sectionSizeHint(col), f"header of column {col} cut"
            assert width >= tree.sizeHintForColumn(col), f"cells of column {col} cut"
            texts = [tree.topLevelItem(row).text(col) for row in range(tree.topLevelItemCount())]
            assert width > header.fontMetrics().horizontalAdvance(tree.headerItem().text(col))
            assert width > max(tree.fontMetrics().horizontalAdvance(t) for t in texts), texts
            assert 0 <= left and left + width <= tree.viewport().width(), f"column {col} runs past the edge"

    qtbot.waitUntil(columns_whole, timeout=20_000)  # the dock grows to fit; scroll bars and headers update lazily
    assert tree.topLevelItem(0).text(0) == newest  # the state text, the widest cell, is there whole


def test_a_long_status_message_is_elided_visibly_and_whole_in_the_tooltip(qtbot, window):
    bar, label = window.statusBar(), window.status.message
    message = "Model 0012 is still learning: it shows no proposals yet. " * 6 + "THE END"
    bar.showMessage(message, 60000)
    qtbot.waitUntil(lambda: label.text() != "", timeout=20_000)

    assert bar.currentMessage() == message
    assert label.text().endswith("…") and label.text()[:-1] in message
    assert "THE END" not in label.text()
    assert label.toolTip() == message
    assert label.fontMetrics().horizontalAdvance(label.text()) <= label.contentsRect().width()
    assert label.geometry().right() < window.status.device.geometry().left()  # no field overlaps it

    shown_before = len(label.text())
    window.resize(window.width() + 300, window.height())  # more room: more of the message shows
    qtbot.waitUntil(lambda: len(label.text()) > shown_before, timeout=20_000)
    assert label.toolTip() == message


def test_a_short_status_message_shows_whole_and_goes_when_it_times_out(qtbot, window):
    bar, label = window.statusBar(), window.status.message
    bar.showMessage("Accepted img0.png.", 200)
    qtbot.waitUntil(lambda: label.text() == "Accepted img0.png.", timeout=20_000)
    assert label.toolTip() == ""
    qtbot.waitUntil(lambda: label.text() == "" and bar.currentMessage() == "", timeout=20_000)


@pytest.mark.parametrize("threads, text", [(1, "device: CPU (1 thread)"), (2, "device: CPU (2 threads)")])
def test_device_names_its_cpu_threads_in_good_english(window, threads, text):
    import torch

    from segdesk.ml.device import device_name

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        window.status.show_device(device_name(torch.device("cpu")))
    finally:
        torch.set_num_threads(before)
    assert window.status.device.text() == text


@pytest.mark.parametrize("name, shown", [("CPU (11 threads)", "CPU (11 threads)"),
                                         ("CPU (21 threads)", "CPU (21 threads)"),
                                         ("NVIDIA H200 (CUDA)", "NVIDIA H200 (CUDA)")])
def test_other_device_names_are_left_as_they_are(window, name, shown):
    window.status.show_device(name)
    assert window.status.device.text() == f"device: {shown}"


def test_a_fitted_image_is_whole_and_centred(qtbot, window, tmp_path):
    """The scene reaches beyond the image for panning; scroll bars then left a fitted image cut."""
    import numpy as np

    canvas = window.canvas
    canvas.set_image(np.full((256, 256, 3), 128, np.uint8))
    canvas.fit()
    qtbot.waitUntil(lambda: canvas.viewport().width() > 0, timeout=20_000)
    shown = canvas.mapFromScene(canvas._image_item.sceneBoundingRect()).boundingRect()
    view = canvas.viewport().rect()
    assert view.contains(shown), (shown, view)
    assert abs(shown.center().x() - view.center().x()) <= 2 and abs(shown.center().y() - view.center().y()) <= 2
    assert max(shown.width(), shown.height()) >= min(view.width(), view.height()) - 8  # it fills the view
    # scroll bars would take room from the viewport after the fit (on X11 the fitted image came out
    # cut and off-centre); panning is the middle button or Ctrl+drag
    assert not canvas.horizontalScrollBar().isVisible() and not canvas.verticalScrollBar().isVisible()


def test_training_panel_values_are_one_line_with_the_whole_text_as_tooltip(qtbot):
    from segdesk.qt.training_panel import TrainingPanel

    panel = TrainingPanel()
    qtbot.addWidget(panel)
    panel.resize(300, 400)
    panel.show()
    text = "flip up-down; no left-right flip or 90° turns (class 'left lung' sits on the left in 12 of 12 images)"
    panel.show_progress({"step": 1, "augmentation": text})
    label = panel.augmentation
    assert label.full_text() == text
    assert label.text() != text and label.text().endswith("…")
    assert text in label.toolTip()
