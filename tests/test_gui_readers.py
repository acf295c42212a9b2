"""Files the window reads while the user labels are read off the GUI thread: the stored proposal
scores ("least sure first") and a trainer elsewhere's heartbeat. On a shared folder that is slow or
gone, a read can take seconds; the window must keep painting meanwhile."""

from __future__ import annotations

import threading
import time

import numpy as np

from segdesk.core import next_image, trainer_presence
from segdesk.core.project import write_proposal
from segdesk.qt.score_reader import ScoreReader
from segdesk.qt.trainer_elsewhere import TrainerElsewhere


def test_stored_scores_are_read_off_the_gui_thread_and_answered_from_memory(qtbot, tmp_path, monkeypatch):
    folder = tmp_path / "proposals"
    folder.mkdir()
    label = np.ones((4, 4), np.uint8)
    write_proposal(folder, "a", label, "0002", uncertainty=0.3)
    write_proposal(folder, "b", label, "0001", uncertainty=0.4)  # an older model's: not counted
    readers = []
    real = next_image.read_proposal_meta  # what next_image.Scores, the reader's cache, reads with
    monkeypatch.setattr(next_image, "read_proposal_meta",
                        lambda *a: readers.append(threading.current_thread()) or real(*a))
    reader = ScoreReader()
    reader.set_folder(folder)
    with qtbot.waitSignal(reader.changed, timeout=20_000):
        reader.refresh(["a", "b", "c"])
    assert reader.of(["a", "b", "c"], "0002") == {"a": 0.3}
    assert readers and threading.main_thread() not in readers

    reader.put("c", "0002", 0.45)  # the inference worker says it scored one: known at once
    write_proposal(folder, "a", label, "0002", uncertainty=0.1)
    with qtbot.waitSignal(reader.changed, timeout=20_000):
        reader.refresh(["a", "b"])
    assert reader.of(["a", "b", "c"], "0002") == {"a": 0.1, "c": 0.45}
    assert reader.of(["a"], None) == {}
    reader.shutdown()


def test_the_heartbeat_is_read_off_the_gui_thread_once_the_watch_runs(qtbot, tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    readers = []
    real = trainer_presence.read_heartbeat
    monkeypatch.setattr(trainer_presence, "read_heartbeat",
                        lambda root: readers.append(threading.current_thread()) or real(root))
    watch = TrainerElsewhere(tmp_path, poll_ms=20)
    assert watch.alive is None  # read once as the project opens: nobody trains elsewhere
    readers.clear()
    watch.start()
    with qtbot.waitSignal(watch.changed, timeout=20_000) as seen:
        trainer_presence.storage.atomic_write_json(
            trainer_presence.heartbeat_path(tmp_path),
            {"host": "gpu-server", "pid": 1, "device": "cuda", "time": time.time(), "step": 3})
    assert seen.args[0]["host"] == "gpu-server" and watch.alive["step"] == 3
    assert readers and threading.main_thread() not in readers
    watch.stop()
