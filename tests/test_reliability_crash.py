"""Crash safety, quick version: a few SIGKILLs of a working child (see segdesk/reliability/crash.py;
the full run is ``python -m segdesk.reliability.crash --kills 100``)."""

from __future__ import annotations

import sys

import pytest

from segdesk.reliability import crash

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def test_a_few_kills_lose_nothing(tmp_path):
    report = crash.run(kills=3, work=tmp_path / "work", seed=7, max_delay=1.5, early_kill=0.34)
    assert report["failures"] == [], report["failures"]
    assert report["kills_survived"] == 3
    assert report["writes_journalled"] > 0  # the child did work that the checks then verified
    # every child that got going (it takes the lock first) left a lock that was found stale and taken over
    assert all(r["stale_lock_taken_over"] for r in report["rounds"] if r["moment"] != "start-up")
