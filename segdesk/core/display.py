"""What the screen shows of an image: the automatic window, its default display window, window
presets, the 8-bit rendering, and one line describing a DICOM image. Display only: stored values
never change.

A window is (low, high) in stored values (Hounsfield units for CT): low maps to black, high to
white. Radiology speaks of level (centre) and width: low = level - width / 2, high = level + width / 2.
"""

from __future__ import annotations

import cv2
import numpy as np

from segdesk.core.dicom_image import DicomImage, window_from_center_width
from segdesk.core.image import Image

# (name, level, width) in Hounsfield units, the usual radiology presets.
CT_PRESETS = (
    ("CT lung", -600.0, 1500.0),
    ("CT soft tissue", 40.0, 400.0),
    ("CT bone", 400.0, 1800.0),
    ("CT brain", 40.0, 80.0),
)
AUTO = "Auto (0.5-99.5 percentile)"
VOI_LUT = "File: VOI LUT"
_MAX_WINDOW_SAMPLES = 1_000_000
# Images with more pixels are displayed from a LazyDisplay (no 8-bit copy of the whole image).
LARGE_PIXELS = 2048 * 2048


def auto_window(pixels: np.ndarray) -> tuple[float, float]:
    """Display window (low, high) from the 0.5 and 99.5 percentiles; (0, 255) for uint8.

    Percentiles rather than min/max so a few hot pixels do not leave the image dark. Large images
    are subsampled (every k-th value, at most ~1M values) to keep this fast.
    """
    if pixels.dtype == np.uint8:
        return 0.0, 255.0
    flat = pixels.reshape(-1)
    values = flat[:: max(1, flat.size // _MAX_WINDOW_SAMPLES)]
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if high <= low:  # nearly flat: the full range, then a unit step
        low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + max(1.0, abs(low) * 1e-6)
    return low, high


def to_display(pixels: np.ndarray, window: tuple[float, float] | None = None, rgb: bool = True) -> np.ndarray:
    """uint8 H x W x 3 RGB for the screen: window low..high mapped linearly to 0..255, clipped.
    ``rgb`` False keeps a gray image H x W (a third of the memory)."""
    if pixels.ndim == 3 and pixels.shape[2] in (1, 4):
        pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels[:, :, :3]
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.dtype == np.uint8 and window is None:
        out = pixels if rgb and pixels.ndim == 2 else pixels.copy()  # GRAY2RGB below makes the copy
    else:
        low, high = (float(v) for v in (window if window is not None else auto_window(pixels)))
        if not high > low:
            raise ValueError(f"display window needs high > low, got ({low}, {high})")
        scale = 255.0 / (high - low)
        if pixels.dtype == np.uint8:
            lut = np.clip(np.rint((np.arange(256) - low) * scale), 0, 255).astype(np.uint8)
            out = cv2.LUT(pixels, lut)
        elif pixels.dtype.itemsize == 2 and pixels.dtype.kind in "iu" and pixels.dtype.isnative:
            # A table over all 65536 codes: one gather, no float copy of the image.
            codes = np.arange(65536, dtype=np.uint16).view(pixels.dtype)
            lut = np.clip(np.rint((codes - low) * scale), 0, 255).astype(np.uint8)
            out = lut[np.ascontiguousarray(pixels).view(np.uint16)]
        else:
            clipped = np.clip(pixels.astype(np.float32, copy=False), low, high)
            out = cv2.convertScaleAbs(clipped, alpha=scale, beta=-low * scale)  # >= 0, so abs is a no-op
    if out.ndim == 2 and rgb:
        return cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(out)


def voi_window(image: Image) -> tuple[float, float] | None:
    """The input range of the file's VOI LUT; while this is the window, the LUT curve is used."""
    if not isinstance(image, DicomImage) or image.voi_lut is None:
        return None
    first, table = image.voi_lut
    return float(first), float(first + max(len(table) - 1, 1))


def _file_window(image: Image) -> tuple[float, float] | None:
    if isinstance(image, DicomImage) and not image.is_color:
        if image.windows:
            return image.windows[0][1], image.windows[0][2]
        return voi_window(image)
    return None


def default_window(image: Image) -> tuple[float, float] | None:
    """The window an image opens with: the DICOM file's first window, else its VOI LUT, else the
    0.5-99.5 percentiles for images with more than 8 bits; None (no windowing) for 8-bit images."""
    window = _file_window(image)
    if window is None and image.bit_depth > 8:
        window = auto_window(image.pixels)
    return window


def presets(image: Image) -> list[tuple[str, tuple[float, float] | None]]:
    """(name, window) choices for the image; window None stands for the automatic window."""
    if image.bit_depth <= 8 and _file_window(image) is None:
        return []
    out: list[tuple[str, tuple[float, float] | None]] = []
    dicom = isinstance(image, DicomImage)
    if dicom:
        for name, low, high in image.windows:
            out.append((f"File: {name} ({(low + high) / 2:g}/{high - low:g})", (low, high)))
        if image.voi_lut is not None:
            out.append((VOI_LUT, voi_window(image)))
    out.append((AUTO, None))
    hounsfield = image.modality == "CT" if dicom else image.pixels.dtype.kind in "if"
    if hounsfield and not image.is_color:
        out += [(f"{name} ({level:g}/{width:g})", window_from_center_width(level, width))
                for name, level, width in CT_PRESETS]
    return out


def _voi_display(pixels: np.ndarray, first: int, table: np.ndarray) -> np.ndarray:
    table8 = np.rint(table * 255.0).astype(np.uint8)
    if pixels.dtype.itemsize == 2 and pixels.dtype.kind in "iu":
        codes = np.arange(65536, dtype=np.uint16).view(pixels.dtype).astype(np.int64)
        lut = table8[np.clip(codes - first, 0, len(table8) - 1)]
        return lut[np.ascontiguousarray(pixels).view(np.uint16)]
    index = np.clip(np.rint(pixels.astype(np.float64)) - first, 0, len(table8) - 1).astype(np.intp)
    return table8[index]


def _render_pixels(pixels: np.ndarray, window: tuple[float, float] | None, voi_lut, invert: bool,
                   rgb: bool = True) -> np.ndarray:
    """The display of ``pixels``: the VOI LUT (first, table) when given, else ``window``; turned over
    when ``invert``."""
    if voi_lut is not None:
        out = _voi_display(pixels, *voi_lut)
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2RGB) if rgb and out.ndim == 2 else out
    else:
        out = to_display(pixels, window, rgb)
    if invert:
        cv2.bitwise_not(out, dst=out)
    return out


def render(image: Image, window: tuple[float, float] | None) -> np.ndarray | LazyDisplay:
    """uint8 H x W x 3 RGB for the screen. The file's VOI LUT is applied while ``window`` is its
    input range; MONOCHROME1 is turned over after windowing (white = low values). An image of more
    than LARGE_PIXELS gets a LazyDisplay instead: the same values, computed for the part asked for."""
    voi = voi_window(image)
    voi_lut = image.voi_lut if voi is not None and window is not None and tuple(window) == voi else None
    invert = isinstance(image, DicomImage) and image.invert
    if image.height * image.width > LARGE_PIXELS:
        return LazyDisplay(image.pixels, window, voi_lut, invert)
    return _render_pixels(image.pixels, window, voi_lut, invert)


class LazyDisplay:
    """The display of a large image without an 8-bit copy of it: indexing (``display[y0:y1:k,
    x0:x1:k]``) maps just those pixels, with the same values ``render`` gives. Gray images stay
    H x W; colour ones are H x W x 3. 8- and 16-bit integer pixels go through one table of every
    value (built once); others are mapped per request."""

    dtype = np.dtype(np.uint8)

    def __init__(self, pixels: np.ndarray, window: tuple[float, float] | None, voi_lut=None, invert: bool = False):
        if window is None and pixels.dtype != np.uint8 and voi_lut is None:
            window = auto_window(pixels)  # pinned: each part must not get a window of its own
        self.pixels, self.window = pixels, window
        self._voi_lut, self._invert = voi_lut, invert
        self._table: np.ndarray | None = None
        self._as_is = pixels.dtype == np.uint8 and window is None and voi_lut is None and not invert
        if pixels.dtype.kind in "iu" and pixels.dtype.itemsize <= 2 and not self._as_is:
            codes = np.arange(2 ** (8 * pixels.dtype.itemsize), dtype=f"u{pixels.dtype.itemsize}")
            self._table = _render_pixels(codes.view(pixels.dtype)[None, :], window, voi_lut, invert, rgb=False)[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape

    @property
    def ndim(self) -> int:
        return self.pixels.ndim

    @property
    def nbytes(self) -> int:
        return 0 if self._table is None else int(self._table.nbytes)

    def __getitem__(self, key) -> np.ndarray:
        part = self.pixels[key]
        if self._as_is:  # 8-bit shown as it is: a copy of the part, no table
            return np.array(part, copy=True)
        if self._table is not None:
            return self._table[part.view(f"u{part.dtype.itemsize}")]
        return _render_pixels(np.ascontiguousarray(part), self.window, self._voi_lut, self._invert, rgb=False)


def describe(image: Image) -> str:
    """'CT · Chest 1.0 · instance 12 · frame 3 of 40' for a DICOM image; '' for other images."""
    if not isinstance(image, DicomImage):
        return ""
    parts = [image.modality or "DICOM"]
    if image.series_description:
        parts.append(image.series_description)
    if image.instance_number is not None:
        parts.append(f"instance {image.instance_number}")
    if image.frame is not None:
        parts.append(f"frame {image.frame + 1} of {image.n_frames}")
    return " · ".join(parts)
