"""The image model both readers share: ``imageio`` (PNG, JPEG, TIFF, BMP) and ``dicom``.

An ``Image`` keeps the file's pixels with their original dtype and values (16-bit stays 16-bit);
only the display makes uint8. Every reader checks the header's size against ``MAX_PIXELS`` before
decoding, brings the pixels to one layout with ``normalise``, and reports failures through
``read_error``, whose message is fit to show the user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segdesk.core.errors import ImageReadError

# A gigapixel (32768 x 32768): whole-slide-sized 2D images open (issue 14: 20,000 x 20,000 and up);
# a damaged header claiming a size the file cannot hold is refused by decode_limits before decoding.
MAX_PIXELS: int = 32_768 * 32_768
MAX_FILE_BYTES: int = 2 * 1024**3

_KEPT_DTYPES = frozenset(
    np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32")
)


@dataclass(frozen=True, eq=False)  # eq=False: == on ndarrays is elementwise, not a bool
class Image:
    """Decoded pixels (H x W gray or H x W x 3 RGB, original dtype) and the file they came from."""

    pixels: np.ndarray
    path: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def shape2d(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def is_color(self) -> bool:
        return self.pixels.ndim == 3

    @property
    def bit_depth(self) -> int:
        return self.pixels.dtype.itemsize * 8


def read_error(path, reason: str) -> ImageReadError:
    """The error for an image that cannot be opened; ``reason`` says why, for the user."""
    return ImageReadError(f"Cannot open image '{path}': {reason}")


def check_pixels(path, h: int, w: int, max_pixels: int) -> None:
    """Refuse an impossible or too large size from a header, before anything is decoded."""
    if h <= 0 or w <= 0:
        raise read_error(path, f"its header gives an impossible image size of {w} x {h} pixels; "
                               "the file is damaged.")
    if h * w > max_pixels:
        raise read_error(path, f"the image size of {w} x {h} pixels ({h * w / 1e6:.0f} megapixels) is "
                               f"too large; the limit is {max_pixels / 1e6:.0f} megapixels.")


def normalise(path, arr: np.ndarray) -> np.ndarray:
    """Check the dtype and layout every caller relies on; bool -> 0/255, other floats -> float32."""
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype.kind == "f" and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    if arr.dtype not in _KEPT_DTYPES:
        raise read_error(path, f"its pixel type ({arr.dtype}) is not supported; segdesk reads 8/16/32-bit "
                               "integer and floating-point images.")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise read_error(path, f"its pixel layout {arr.shape} is not a 2D gray or RGB image.")
    return np.ascontiguousarray(arr)
