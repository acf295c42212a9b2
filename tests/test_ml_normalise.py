"""Per-image percentile normalisation for every pixel type."""

import numpy as np
import pytest

from segdesk.ml.normalise import to_model_input


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_gray_of_any_dtype(dtype):
    rng = np.random.default_rng(0)
    pixels = (rng.random((20, 30)) * 100 - (50 if dtype == np.int16 else 0)).astype(dtype)
    x = to_model_input(pixels)
    assert x.shape == (3, 20, 30) and x.dtype == np.float32
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2])
    assert -2.01 <= x.min() < -1.5 and 1.5 < x.max() <= 2.01  # percentiles map to -2..2


def test_same_picture_in_different_dtypes_gives_same_input():
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (16, 16)).astype(np.uint8)
    wide = small.astype(np.uint16) * 257
    assert np.allclose(to_model_input(small), to_model_input(wide), atol=1e-5)


def test_colour_keeps_its_balance():
    pixels = np.zeros((10, 10, 3), np.uint8)
    pixels[..., 0] = 200  # a reddish image: per-channel scaling would make it gray
    pixels[..., 1] = np.arange(10)[None, :] * 10
    x = to_model_input(pixels)
    assert x[0].mean() > x[2].mean() + 1


def test_constant_image_is_centred_not_nan():
    x = to_model_input(np.full((8, 8), 7, np.uint16))
    assert np.all(x == 0)


def test_alpha_and_single_channel_axis():
    assert to_model_input(np.zeros((4, 5, 4), np.uint8)).shape == (3, 4, 5)
    assert to_model_input(np.zeros((4, 5, 1), np.uint8)).shape == (3, 4, 5)
    with pytest.raises(ValueError):
        to_model_input(np.zeros((2, 4, 5, 3), np.uint8))
