"""The label writer's waits: an image switch waits a frame at most, close waits for the disk, and a
write that outlasts a wait is neither lost nor silent."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from segdesk.core import storage
from segdesk.qt import autosave
from segdesk.qt.autosave import Autosaver
from tests.conftest import keeper_with_a_stroke


def slow_disk(monkeypatch) -> threading.Event:
    """Label writes wait until the returned event is set (a disk that has stalled)."""
    go = threading.Event()
    real = storage.write_label

    def write_label(path, label):
        assert go.wait(60)
        real(path, label)

    monkeypatch.setattr(autosave.storage, "write_label", write_label)
    return go


def test_a_stalled_write_outlasts_a_settle_and_a_short_flush_and_is_still_written(qtbot, tmp_path, monkeypatch,
                                                                                  caplog):
    go = slow_disk(monkeypatch)
    saver = Autosaver()
    saved = []
    saver.saved.connect(lambda image_id, version, *_: saved.append((image_id, version)))
    label = np.full((4, 4), 2, np.uint8)
    saver.submit("a", tmp_path / "a.png", label, 1)

    started = time.monotonic()
    assert not saver.settle()  # an image switch waits a frame, not for the disk
    assert time.monotonic() - started < 1.0
    with caplog.at_level(logging.WARNING, logger="segdesk.qt.autosave"):
        assert not saver.flush(timeout=0.05)
    assert "1 label write(s) still running" in caplog.text  # not passed over in silence

    go.set()
    assert saver.flush()  # the write that outlasted both waits is still waited for
    assert saver.saved_version("a") == 1 and (tmp_path / "a.png").exists()
    qtbot.waitUntil(lambda: saved == [("a", 1)], timeout=5000)
    saver.shutdown()


def test_leaving_an_image_on_a_stalled_disk_keeps_its_label_in_memory_until_written(qtbot, tmp_path, monkeypatch):
    project, image_id, keeper, doc = keeper_with_a_stroke(tmp_path)
    go = slow_disk(monkeypatch)

    started = time.monotonic()
    keeper.close()  # switching to another image
    assert time.monotonic() - started < 1.0
    assert keeper.unsaved_ids() == [image_id]  # in memory while the disk is busy

    with qtbot.waitSignal(keeper.label_stored, timeout=20_000):
        go.set()
    assert not keeper.unsaved_ids()
    assert np.array_equal(project.read_label(image_id), doc.label)
    assert keeper.take_unsaved(image_id) is None  # written: nothing is kept any more
    keeper.shutdown()
