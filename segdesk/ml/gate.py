"""Where the training thread waits: for changed labels, for a stop, and for a running proposal.

Other threads announce (labels saved, stop asked, proposal begun or ended) and a waiting trainer
wakes at once; no one polls. One gate is shared by the training and inference workers
(DESIGN.md "Threads": a proposal waits behind at most one training step). A trainer in a child
process (segdesk.ml.train_process) has a gate of its own: this one forwards each announcement to
it as a command (``forward``), and ``obey`` applies one there.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

# announcements as commands for a gate in another process
LABELS, STOP, PROPOSING, PROPOSED = "labels", "stop", "proposing", "proposed"


class TrainingGate:
    """Thread-safe. Announce from any thread; wait from the training thread."""

    def __init__(self):
        self._condition = threading.Condition()
        self._labels_announced = False
        self._stopped = False
        self._proposals = 0  # proposals being computed now
        self._forward: Callable[[str], None] | None = None

    def forward(self, send: Callable[[str], None] | None) -> None:
        """From now on also ``send`` each announcement (LABELS, STOP, PROPOSING, PROPOSED) to a
        trainer's gate in another process; None ends it. The other gate is brought up to date first,
        under the same lock: one PROPOSING per proposal running now, and a STOP if one was asked."""
        with self._condition:
            self._forward = send
            if send is not None:
                for _ in range(self._proposals):
                    send(PROPOSING)
                if self._stopped:
                    send(STOP)

    def obey(self, command: str) -> None:
        """Apply a command forwarded by another process's gate."""
        if command == LABELS:
            self.announce_labels()
        elif command == STOP:
            self.stop()
        elif command == PROPOSING:
            self._change_proposals(1)
        elif command == PROPOSED:
            self._change_proposals(-1)

    def _tell(self, command: str) -> None:
        """Under the lock, so commands leave in the order they happened."""
        if self._forward is not None:
            self._forward(command)

    # ----- announcements, from any thread

    def announce_labels(self) -> None:
        """Labels on disk changed: a trainer waiting for labels wakes."""
        with self._condition:
            self._labels_announced = True
            self._condition.notify_all()
            self._tell(LABELS)

    def stop(self) -> None:
        """Ask the trainer to stop: every wait returns at once, and stays open until ``clear_stop``."""
        with self._condition:
            self._stopped = True
            self._condition.notify_all()
            self._tell(STOP)

    def clear_stop(self) -> None:
        """Before a new training run."""
        with self._condition:
            self._stopped = False

    @contextmanager
    def proposing(self) -> Iterator[None]:
        """Around a proposal: training pauses after its current step until the proposal is done."""
        self._change_proposals(1)
        try:
            yield
        finally:
            self._change_proposals(-1)

    def _change_proposals(self, by: int) -> None:
        with self._condition:
            self._proposals = max(0, self._proposals + by)
            self._condition.notify_all()
            self._tell(PROPOSING if by > 0 else PROPOSED)

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
