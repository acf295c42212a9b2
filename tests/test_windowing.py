"""Display windowing without a window: what WindowingController emits for the tools panel, and the
windows it chooses from presets, typed values and Shift + right-drags."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segdesk.core import display
from segdesk.core.display import auto_window
from segdesk.core.imageio import read_image
from segdesk.qt.windowing import LEVEL_WIDTHS_PER_PX, REDRAW_MS, WIDTH_DOUBLING_PX, WindowingController
from tests.dicom_factory import ct_file, ct_phantom

LUNG = "CT lung (-600/1500)"


class Recorder:
    """Every signal of a controller, in order, as (name, arguments)."""

    def __init__(self, controller: WindowingController):
        self.seen: list[tuple[str, tuple]] = []
        for name in ("window_chosen", "window_changed", "windowing_available", "presets_changed",
                     "preset_matched", "described"):
            getattr(controller, name).connect(lambda *args, n=name: self.seen.append((n, args)))

    def of(self, name: str) -> list[tuple]:
        return [args for n, args in self.seen if n == name]


@pytest.fixture
def ct(tmp_path):
    return read_image(ct_file(tmp_path / "slice.dcm", ct_phantom(size=64)))


@pytest.fixture
def shown(qtbot, ct):
    """A controller showing the CT slice with its own window, and what it said."""
    controller = WindowingController()
    seen = Recorder(controller)
    controller.set_image(ct, display.default_window(ct))
    return controller, seen


def test_a_new_image_brings_its_presets_window_and_description(shown):
    controller, seen = shown
    (names,), = seen.of("presets_changed")
    assert names[0] == "File: window 1 (40/400)" and LUNG in names
    assert seen.of("windowing_available") == [(True,)]
    assert seen.of("window_changed") == [(-160.0, 240.0)]  # the file's own window
    assert seen.of("preset_matched") == [(0,)]
    (text,), = seen.of("described")
    assert text.startswith("CT")
    assert controller.window == (-160.0, 240.0) and not seen.of("window_chosen")


def test_an_eight_bit_image_has_no_window_to_show(qtbot, tmp_path):
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((8, 8), 100, np.uint8))
    controller = WindowingController()
    seen = Recorder(controller)
    controller.set_image(read_image(tmp_path / "gray.png"), None)
    assert seen.seen == [("presets_changed", ([],)), ("windowing_available", (False,)), ("preset_matched", (-1,))]
    controller.drag(50.0, 0.0, True)
    controller.reset()
    assert not seen.of("window_chosen")  # nothing to window


def test_presets_typed_windows_and_reset_are_chosen_for_the_window_to_apply(shown, ct):
    controller, seen = shown
    names = seen.of("presets_changed")[0][0]
    controller.choose_preset(names.index(LUNG))
    controller.choose_preset(names.index(display.AUTO))  # the automatic window is computed here
    controller.choose_preset(len(names))  # out of range: nothing
    controller.choose_window(-100.0, 100.0)
    controller.choose_window(100.0, 100.0)  # not a window: nothing
    controller.reset()
    assert seen.of("window_chosen") == [((-1350.0, 150.0),), (auto_window(ct.pixels),), ((-100.0, 100.0),), (None,)]


def test_an_applied_window_names_its_preset_or_none(shown):
    controller, seen = shown
    names = seen.of("presets_changed")[0][0]
    controller.show_window((-1350.0, 150.0))  # the file's second window is lung too: the first match names it
    assert seen.of("window_changed")[-1] == (-1350.0, 150.0)
    assert seen.of("preset_matched")[-1] == (names.index("File: window 2 (-600/1500)"),)
    controller.show_window((-10.0, 10.0))
    assert seen.of("preset_matched")[-1] == (-1,)  # "Custom"
    assert controller.window == (-10.0, 10.0)


def test_a_drag_is_relative_to_the_window_at_the_press_and_redraws_are_throttled(qtbot, shown):
    controller, seen = shown
    for dx in (10.0, 40.0, 100.0):
        controller.drag(dx, 20.0, False)
    assert not seen.of("window_chosen")  # no redraw per mouse move
    qtbot.waitUntil(lambda: len(seen.of("window_chosen")) == 1, timeout=10 * REDRAW_MS + 1000)
    controller.drag(100.0, 50.0, True)  # the release applies at once
    (first,), (last,) = seen.of("window_chosen")
    level, width = sum(last) / 2, last[1] - last[0]
    assert width == pytest.approx(400 * 2 ** (100 / WIDTH_DOUBLING_PX))  # right: wider
    assert level == pytest.approx(40 + 50 * 400 * LEVEL_WIDTHS_PER_PX)  # down: higher level (darker)
    assert first[1] - first[0] == pytest.approx(width)  # the newest move of the throttled ones
