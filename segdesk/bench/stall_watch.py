"""Where the GUI thread was while its event loop was late: stall attribution for ``segdesk bench ui``.

A watchdog thread looks at the GUI thread's Python stack (``sys._current_frames``) every few
milliseconds while the loop's last tick is older than ``late_ms``. Samples whose innermost frame is
the bench's own wait (``processEvents``/``sleep``) mean the GUI thread ran no Python of ours then:
it waited for the CPU or the GIL (another thread or process held it), or Qt ran C++ (painting).
The other threads' stacks are sampled with it (their innermost frame and the nearest frame of
segdesk's own code), to tell which of the process's workers ran meanwhile.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from pathlib import Path

SAMPLE_S = 0.002
DEPTH = 6  # innermost frames kept per sample
_PACKAGE = str(Path(__file__).resolve().parents[1])  # segdesk's own code lives below this


def _label(frame) -> str:
    code = frame.f_code
    return f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}"


def _ours(frame) -> str:
    """The innermost frame and the nearest one in segdesk's code: which worker, doing what."""
    inner = _label(frame)
    while frame is not None and not frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
    return inner if frame is None else f"{inner} < {_label(frame)}"


def _idle(frame) -> bool:
    """A thread waiting for work (an executor's queue, an event, a lock's heartbeat)."""
    return frame.f_code.co_name in ("wait", "_worker", "get", "_wait_for_tstate_lock", "select")


def _where(frame) -> list[str]:
    out = []
    while frame is not None and len(out) < DEPTH:
        code = frame.f_code
        out.append(f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}")
        frame = frame.f_back
    return out


class StallWatch:
    """Samples the GUI thread's stack while it is late. ``last_tick`` is read from the GUI thread's
    ticker (a one-element list of ``time.perf_counter()`` values it updates)."""

    def __init__(self, last_tick: list[float], late_ms: float = 20.0):
        self._gui = threading.get_ident()
        self._last = last_tick
        self._late_s = late_ms / 1000
        self._stop = threading.Event()
        self.samples: list[tuple[float, tuple[str, ...]]] = []  # (perf_counter time, stack innermost first)
        self.others: list[tuple[float, tuple[str, ...]]] = []  # (time, where each other thread was)
        self._thread = threading.Thread(target=self._run, name="segdesk-stall-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            now = time.perf_counter()
            if now - self._last[0] < self._late_s:
                continue
            frames = sys._current_frames()
            frame = frames.get(self._gui)
            if frame is not None:
                self.samples.append((now, tuple(_where(frame))))
            me = threading.get_ident()
            self.others.append((now, tuple(sorted(_ours(f) for ident, f in frames.items()
                                                  if ident not in (me, self._gui) and not _idle(f)))))

    def during(self, start: float, end: float) -> dict:
        """What the GUI thread was doing between two perf_counter times: the most frequent stacks."""
        stacks = Counter(s for t, s in self.samples if start <= t <= end)
        n = sum(stacks.values())
        others = Counter(w for t, s in self.others if start <= t <= end for w in s)
        m = sum(1 for t, _ in self.others if start <= t <= end)
        return {"samples": n,
                "stacks": [{"share": round(c / n, 2), "where": list(s)} for s, c in stacks.most_common(3)],
                # where the process's other busy threads were: in which share of those samples
                "other_threads": [{"share": round(c / m, 2), "where": w} for w, c in others.most_common(6)]}
