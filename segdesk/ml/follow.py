"""A trainer that follows a project: ``segdesk train PROJECT --follow``.

It keeps training while the desktop app labels: new accepted labels and corrections are picked
up from the project folder as the app writes them, checkpoints are written as the app's own
trainer writes them, and a heartbeat (segdesk.core.trainer_presence) tells the app who trains.
When the folder goes away (a network share disconnecting, a full disk), the trainer logs it,
waits and resumes; every write is atomic, so nothing half-written is left either way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

from segdesk.core import trainer_presence
from segdesk.core.errors import SegdeskError
from segdesk.ml.states import STOPPED, WAITING
from segdesk.ml.train_process import progress_dict

log = logging.getLogger(__name__)

RETRY_S = 10.0  # after a failed read or write of the project folder


class Heartbeat:
    """Rewrites the heartbeat every ``every_s`` seconds on its own thread, with the latest
    progress; removes it on ``stop``. A beat that cannot be written is logged and retried."""

    def __init__(self, root, device: str, every_s: float = trainer_presence.BEAT_S):
        self.root, self.device, self.every_s = root, device, every_s
        self._progress: dict = {"state": WAITING}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="segdesk-trainer-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self._beat()
        self._thread.start()
        return self

    def update(self, progress) -> None:
        """Carry a trainer Progress in the next beats."""
        data = progress_dict(progress)
        data["images_per_s"] = round(data["images_per_s"], 2)
        with self._lock:
            self._progress = data

    def _beat(self) -> None:
        with self._lock:
            progress = dict(self._progress)
        trainer_presence.write_heartbeat(self.root, self.device, **progress)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        trainer_presence.clear_heartbeat(self.root, pid=os.getpid())


def follow(trainer, should_stop: Callable[[], bool], on_progress: Callable = lambda p: None,
           retry_s: float = RETRY_S):
    """Train, wait for new labels when validation stops improving, train again; until
    ``should_stop``. Returns the final Progress."""
    while not should_stop():
        try:
            trainer.run(on_progress=on_progress, should_stop=should_stop)
            if should_stop():
                break
            on_progress(trainer.progress(WAITING))
            log.info("waiting for new labels")
            trainer.wait_for_labels(None, should_stop)
        except SegdeskError as exc:  # the share went away or the disk is full: nothing was half-written
            log.warning("%s; trying again in %.0f s", exc, retry_s)
            on_progress(trainer.progress(WAITING))
            deadline = time.monotonic() + retry_s
            while time.monotonic() < deadline and not should_stop():
                time.sleep(0.5)  # a signal handler sets should_stop; nothing else can wake us
    return trainer.progress(STOPPED)
