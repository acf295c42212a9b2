"""The display mapping: the automatic window and stored values -> 8-bit RGB for the screen."""

from __future__ import annotations

import numpy as np
import pytest

from segdesk.core.display import auto_window, to_display

RNG = np.random.default_rng(0)


def test_auto_window_uint16():
    data = np.arange(10_000, dtype=np.uint16).reshape(100, 100) + 1000
    low, high = auto_window(data)
    assert 1000 <= low < 1100 and 10_900 < high <= 10_999
    assert auto_window(np.zeros((5, 5), np.uint8)) == (0.0, 255.0)
    flat_low, flat_high = auto_window(np.full((5, 5), 7, np.uint16))
    assert flat_high > flat_low
    big = np.arange(3000 * 1000, dtype=np.float32).reshape(3000, 1000)
    low, high = auto_window(big)
    assert low == pytest.approx(0.005 * big.size, rel=0.02)
    assert high == pytest.approx(0.995 * big.size, rel=0.02)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.int32, np.uint8])
def test_to_display_window(dtype):
    pixels = np.array([[50, 100, 150], [200, 250, 175]], dtype=dtype)
    out = to_display(pixels, (100, 200))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3) and out.flags.c_contiguous
    assert out[..., 0].tolist() in ([[0, 0, 127], [255, 255, 191]], [[0, 0, 128], [255, 255, 191]])
    assert (out[..., 0] == out[..., 2]).all()


def test_to_display_uint8_and_color_and_auto():
    rgb = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    out = to_display(rgb)
    np.testing.assert_array_equal(out, rgb)
    assert out is not rgb
    gray = RNG.integers(0, 256, (5, 6), dtype=np.uint8)
    np.testing.assert_array_equal(to_display(gray), np.repeat(gray[..., None], 3, axis=2))
    img16 = (np.arange(30, dtype=np.uint16).reshape(5, 6) * 1000)
    out = to_display(img16)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    rgba = RNG.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    out = to_display(rgba, (0, 255))
    assert out.shape == (4, 5, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgba[..., :3])
    neg = np.array([[-5.0, np.nan, 1e9]], np.float32)
    assert to_display(neg, (0.0, 1.0))[0, :, 0].tolist()[::2] == [0, 255]
