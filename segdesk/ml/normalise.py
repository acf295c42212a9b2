"""Image pixels to model input: 3 channels, per-image percentile normalisation.

Medical images come as 8-bit, 16-bit, signed (CT) or float, with very different value ranges.
Mapping each image's 0.5th..99.5th percentile to 0..1 makes them comparable without knowing the
modality, and clips the odd hot pixel. Colour images use one percentile pair for all channels, so
their colour balance survives.
"""

from __future__ import annotations

import numpy as np

NORMALISATION = "percentile-0.5-99.5"
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
CENTRE = 0.5
SPREAD = 0.25
N_CHANNELS = 3
# Percentiles of a big image are estimated on a regular subsample of at most this many values.
_PERCENTILE_SAMPLES = 1 << 20


def _channels_last(pixels: np.ndarray) -> np.ndarray:
    """H x W x 3 view of a gray (H x W, H x W x 1) or colour (H x W x 3/4) image."""
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], N_CHANNELS, axis=2)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return np.repeat(pixels, N_CHANNELS, axis=2)
    if pixels.ndim == 3 and pixels.shape[2] >= N_CHANNELS:
        return pixels[:, :, :N_CHANNELS]  # a 4th (alpha) channel is dropped
    raise ValueError(
        f"Expected a gray (H x W) or colour (H x W x 3) image, got shape {pixels.shape}."
    )


def percentile_range(pixels: np.ndarray) -> tuple[float, float]:
    """The image's (0.5th, 99.5th) percentiles over all channels."""
    flat = pixels.reshape(-1)
    if flat.size > _PERCENTILE_SAMPLES:
        flat = flat[:: flat.size // _PERCENTILE_SAMPLES + 1]
    low, high = np.percentile(flat, (LOW_PERCENTILE, HIGH_PERCENTILE))
    return float(low), float(high)


def image_range(pixels: np.ndarray) -> tuple[float, float]:
    """``percentile_range`` of the image as ``normalise_hwc`` sees it (3 channels, float32, non-finite
    values as 0), from the same subsample, without a float copy of the whole image: for images too
    large to copy (segdesk.ml.streaming)."""
    pixels = np.asarray(pixels)
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 or pixels.shape[2] == 1 else N_CHANNELS
    n = h * w * N_CHANNELS
    step = n // _PERCENTILE_SAMPLES + 1 if n > _PERCENTILE_SAMPLES else 1
    index = np.arange(0, n, step, dtype=np.int64)
    flat = pixels.reshape(h * w, -1)  # a view for a contiguous image
    values = flat[index // N_CHANNELS, (index % N_CHANNELS) if channels > 1 else 0].astype(np.float32)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = np.percentile(values, (LOW_PERCENTILE, HIGH_PERCENTILE))
    return float(low), float(high)


def to_model_input(pixels: np.ndarray) -> np.ndarray:
    """float32 3 x H x W, roughly zero mean and unit-ish spread, for any pixel dtype."""
    return np.ascontiguousarray(normalise_hwc(pixels).transpose(2, 0, 1))


def _check(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim not in (2, 3) or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"Expected a non-empty gray or colour image, got shape {pixels.shape}.")
    return pixels


def _float_copy(pixels: np.ndarray) -> np.ndarray:
    """H x W x 3 float32 copy (safe to modify in place), non-finite values as 0."""
    image = _channels_last(_check(pixels)).astype(np.float32)
    if not np.isfinite(image).all():
        image = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
    return image


def normalise_hwc(pixels: np.ndarray) -> np.ndarray:
    """The same values as ``to_model_input`` in H x W x 3 layout (what OpenCV resizes)."""
    image = _float_copy(pixels)
    return _apply_range(image, *percentile_range(image))


def normalise_with(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """``normalise_hwc`` with the range given (a part of an image, normalised as the whole: the range
    from ``image_range``)."""
    return _apply_range(_float_copy(pixels), low, high)


def _apply_range(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """``image`` (float32, modified in place) with ``low``..``high`` mapped to the model's input range."""
    if high > low:
        np.clip(image, low, high, out=image)
        image -= np.float32(low)
        image *= np.float32(1.0 / (high - low))
    else:  # a constant image carries no information: map it to the centre
        image[...] = CENTRE
    image -= np.float32(CENTRE)
    image *= np.float32(1.0 / SPREAD)
    return image
