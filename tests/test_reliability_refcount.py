"""The Qt binding keeps Python's reference counts: found by the soak, where the window died after
21 minutes with "Fatal Python error: none_dealloc: deallocating None".

PySide6 6.12.0 on Python < 3.12 (where None and True are not immortal) drops one reference to None
on every call of a method returning nothing (setText, repaint, showMessage, processEvents...) and
one to True on every Signal.emit. A session makes millions of such calls; when the count reaches
zero the interpreter aborts. pyproject.toml excludes that version; this test fails on any binding
with the same fault.
"""

from __future__ import annotations

import gc
import sys

import PySide6
import pytest
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel

pytestmark = pytest.mark.skipif(sys.version_info >= (3, 12), reason="None and True are immortal from 3.12 on")


class _Emitter(QObject):
    changed = Signal(object)


def _counts() -> tuple[int, int, int]:
    gc.collect()
    return sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)


def test_void_calls_and_emits_keep_reference_counts(qapp):
    label = QLabel()
    emitter = _Emitter()
    emitter.changed.connect(lambda value: None)
    label.setText("warm-up")
    emitter.changed.emit({"warm": None})
    before = _counts()
    for i in range(500):
        label.setText(str(i))
        emitter.changed.emit({"step": i, "val_dice": None})
        qapp.processEvents()
    after = _counts()
    lost = [before[i] - after[i] for i in range(3)]
    assert max(lost) < 50, (f"PySide6 {PySide6.__version__} lost references to (None, True, False): {lost} "
                            "in 500 rounds; a long session will abort with none_dealloc")
