"""Where the training thread waits: for changed labels, for a stop, and for a running proposal.

Other threads announce (labels saved, stop asked, proposal begun or ended) and a waiting trainer
wakes at once; no one polls. One gate is shared by the training and inference workers
(DESIGN.md "Threads": a proposal waits behind at most one training step).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class TrainingGate:
    """Thread-safe. Announce from any thread; wait from the training thread."""

    def __init__(self):
        self._condition = threading.Condition()
        self._labels_announced = False
        self._stopped = False
        self._proposals = 0  # proposals being computed now

    # ----- announcements, from any thread

    def announce_labels(self) -> None:
        """Labels on disk changed: a trainer waiting for labels wakes."""
        with self._condition:
            self._labels_announced = True
            self._condition.notify_all()

    def stop(self) -> None:
        """Ask the trainer to stop: every wait returns at once, and stays open until ``clear_stop``."""
        with self._condition:
            self._stopped = True
            self._condition.notify_all()

    def clear_stop(self) -> None:
        """Before a new training run."""
        with self._condition:
            self._stopped = False

    @contextmanager
    def proposing(self) -> Iterator[None]:
        """Around a proposal: training pauses after its current step until the proposal is done."""
        with self._condition:
            self._proposals += 1
        try:
            yield
        finally:
            with self._condition:
                self._proposals -= 1
                self._condition.notify_all()

    # ----- waits, from the training thread

    @property
    def stopped(self) -> bool:
        with self._condition:
            return self._stopped

    def wait_for_labels(self, timeout: float | None = None) -> bool:
        """Until labels are announced (True, and the announcement is taken), a stop or the timeout
        (False). An announcement made before the call counts."""
        with self._condition:
            self._condition.wait_for(lambda: self._labels_announced or self._stopped, timeout)
            announced = self._labels_announced and not self._stopped
            if announced:
                self._labels_announced = False
            return announced

    def wait_while_proposing(self, timeout: float) -> None:
        """Until no proposal runs, a stop or the timeout (a stuck proposal never stops training)."""
        with self._condition:
            self._condition.wait_for(lambda: not self._proposals or self._stopped, timeout)
