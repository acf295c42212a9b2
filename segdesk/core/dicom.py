"""Reading one DICOM image (one frame of a file) into stored values plus what the display needs.

What is stored (``pixels``) and what is only shown are kept apart:

- **Stored values** are the modality values: Rescale Slope/Intercept (or a Modality LUT) applied,
  so CT pixels are Hounsfield units. When slope and intercept are whole numbers the values stay
  exact integers (16-bit when they fit, else int32); otherwise they become float32. These are
  what labels are drawn on, what the status bar shows and what the model is normalised from.
- **Display only**: the file's Window Center/Width pairs (the first is the default window, the
  others are presets), its VOI LUT, and MONOCHROME1 (white = low values). MONOCHROME1 pixels are
  stored as they are in the file; ``invert`` tells ``segdesk.core.display.render`` to turn the
  8-bit screen image over after windowing, so bright on screen means what it means on a
  radiology workstation while the stored values and the model input keep the file's values.
- Colour (RGB, YBR_* converted to RGB by pydicom, PALETTE COLOR through its lookup table) is
  kept as H x W x 3.

Patient data: nothing read here is logged, and the image id is a hash of the SOP Instance UID,
never the file name (DICOM file names often hold patient names). Only modality, series
description, instance number and frame are kept for display.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from segdesk.core.dicom_image import DicomImage, image_id, uid_hash  # noqa: F401 - image_id re-exported
from segdesk.core.dicom_image import window_from_center_width
from segdesk.core.decode_limits import BoundedReader
from segdesk.core.errors import ImageReadError
from segdesk.core.imageio import MAX_PIXELS, _check_pixels, _fail, _normalise

log = logging.getLogger(__name__)

# pydicom's reading validation warns (and logs) with the offending value, which may be a name:
# segdesk never shows header values it did not ask for, so reading validation is off.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

# Transfer syntaxes newer than the installed pydicom knows by name.
_SYNTAX_NAMES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
}
_INTEGER_DTYPES = (np.int16, np.uint16, np.int32)


def syntax_name(uid: str) -> str:
    return _SYNTAX_NAMES.get(str(uid)) or UID(str(uid)).name


# ----- header helpers


def read_header(path: os.PathLike | str) -> Dataset:
    """Every element up to the pixel data. ``force`` so files without the 128-byte preamble read."""
    with BoundedReader(path) as f:  # a damaged length cannot make Python allocate gigabytes
        return pydicom.dcmread(f, stop_before_pixels=True, force=True)


def to_number(value, default: float) -> float:
    """A DS/IS/US header value as float; ``default`` when absent, empty or not a number."""
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def to_numbers(value) -> list[float]:
    if value in (None, ""):
        return []
    items = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    return [to_number(v, float("nan")) for v in items]


def frame_item(ds: Dataset, frame: int | None, sequence: str) -> Dataset:
    """The functional-group item ``sequence`` for ``frame`` (per-frame, then shared), else ``ds``.

    Enhanced multi-frame objects keep rescale, window and position per frame; classic ones at the top.
    """
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame or 0),
                          ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and index < len(items):
            inner = items[index].get(sequence)
            if inner:
                return inner[0]
    return ds


def n_frames(ds: Dataset) -> int:
    return max(1, int(to_number(ds.get("NumberOfFrames"), 1)))


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)  # a FileDataset always has one, perhaps empty
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts))
    implicit, little = ds.original_encoding  # a bare dataset: the encoding pydicom found
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _check_decodable(path, ts: UID) -> None:
    name = syntax_name(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise _fail(path, f"its pixel data is encoded as {name} (transfer syntax {ts}), which segdesk "
                          "cannot decode. Export it from the PACS or scanner as uncompressed "
                          "(Explicit VR Little Endian), JPEG, JPEG-LS, JPEG 2000 or RLE.") from None
    if not decoder.is_available:
        missing = "; ".join(f"{k}: {', '.join(v)}" for k, v in decoder.missing_dependencies.items())
        raise _fail(path, f"its pixel data is encoded as {name} (transfer syntax {ts}), and no decoder "
                          f"for it is installed ({missing}).")


# ----- reading


def read_size(path: os.PathLike | str) -> tuple[int, int]:
    ds = read_header(path)
    if "Rows" not in ds or "Columns" not in ds:
        raise _not_image(path, ds)
    return int(ds.Rows), int(ds.Columns)


def _not_image(path, ds: Dataset) -> ImageReadError:
    kind = ""
    sop = ds.get("SOPClassUID")
    if sop:
        kind = f" ({UID(str(sop)).name})"
    return _fail(path, f"it is a DICOM file without an image{kind}, e.g. a report, structure set or "
                       "DICOMDIR; add the image files of the series instead.")


def _decode(path, ds: Dataset, ts: UID, frame: int) -> np.ndarray:
    """Decoded stored values of one frame; YBR colour comes back as RGB."""
    if getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID"):
        with BoundedReader(path) as f:  # from the file: only this frame's bytes are read
            return pixel_array(f, index=frame)
    with BoundedReader(path) as f:
        full = pydicom.dcmread(f, force=True)  # a bare dataset without file meta
    full.file_meta = pydicom.dataset.FileMetaDataset()
    full.file_meta.TransferSyntaxUID = ts
    return pixel_array(full, index=frame)


def _rescale(arr: np.ndarray, ds: Dataset, frame: int | None) -> np.ndarray:
    """Modality values: whole-number slope and intercept keep exact integers, others give float32."""
    if "ModalityLUTSequence" in ds:
        return apply_modality_lut(arr, ds)
    item = frame_item(ds, frame, "PixelValueTransformationSequence")
    slope = to_number(item.get("RescaleSlope"), 1.0)
    intercept = to_number(item.get("RescaleIntercept"), 0.0)
    if slope == 1.0 and intercept == 0.0:
        return arr
    if slope.is_integer() and intercept.is_integer() and arr.dtype.kind in "iu":
        values = arr.astype(np.int64) * int(slope) + int(intercept)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        for dtype in (arr.dtype, *_INTEGER_DTYPES):  # 16 bits when they fit: the fast display path
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max and np.dtype(dtype).itemsize >= 2:
                return values.astype(dtype)
    return (arr.astype(np.float64) * slope + intercept).astype(np.float32)


def _windows(ds: Dataset, frame: int | None) -> tuple[tuple[str, float, float], ...]:
    item = frame_item(ds, frame, "FrameVOILUTSequence")
    centers, widths = to_numbers(item.get("WindowCenter")), to_numbers(item.get("WindowWidth"))
    names = item.get("WindowCenterWidthExplanation") or []
    names = [names] if isinstance(names, str) else list(names)
    out = []
    for i, (c, w) in enumerate(zip(centers, widths)):
        if np.isfinite(c) and np.isfinite(w) and w > 0:
            name = str(names[i]).strip() if i < len(names) and str(names[i]).strip() else f"window {i + 1}"
            out.append((name, *window_from_center_width(c, w)))
    return tuple(out)


def _voi_lut(ds: Dataset) -> tuple[int, np.ndarray] | None:
    """The first VOI LUT as (first value mapped, 0..1 table), evaluated by pydicom."""
    seq = ds.get("VOILUTSequence")
    if not seq or "LUTDescriptor" not in seq[0] or "LUTData" not in seq[0]:
        return None
    n, first, bits = (int(v) for v in seq[0].LUTDescriptor)
    n = n or 65536
    if ds.get("PixelRepresentation", 0) == 1 and first >= 32768:
        first -= 65536  # first value mapped is signed for signed pixel data
    lut_only = Dataset()
    lut_only.VOILUTSequence = seq
    lut_only.PixelRepresentation = ds.get("PixelRepresentation", 0)
    lut_only.BitsStored = ds.get("BitsStored", 16)
    inputs = np.arange(first, first + n, dtype=np.int64)
    table = apply_voi_lut(inputs, lut_only, prefer_lut=True).astype(np.float64)
    top = max(float(2 ** min(max(bits, 1), 16) - 1), float(table.max()) if table.size else 1.0, 1.0)
    return first, (table / top).astype(np.float32)


def read_dicom(path: os.PathLike | str, frame: int | None = None, max_pixels: int = MAX_PIXELS) -> DicomImage:
    """One frame (``frame``, 0-based; None reads the first) of a DICOM file. Raises ImageReadError."""
    ds = read_header(path)
    if "Rows" not in ds or "Columns" not in ds:
        raise _not_image(path, ds)
    rows, cols = int(ds.Rows), int(ds.Columns)
    _check_pixels(path, rows, cols, max_pixels)
    total = n_frames(ds)
    index = frame if frame is not None else 0
    if not 0 <= index < total:
        raise _fail(path, f"it holds {total} frame(s), so frame {index + 1} does not exist; "
                          "was the file replaced?")
    if frame is None and total > 1:
        log.debug("%s holds %d frames; reading the first", Path(path).name, total)
    ts = _transfer_syntax(ds)
    _check_decodable(path, ts)
    try:
        arr = _decode(path, ds, ts, index)
    except AttributeError as exc:
        if "no pixel data" in str(exc).lower():  # pydicom: "... has no 'Pixel Data' ... element"
            raise _not_image(path, ds) from exc
        raise
    except (ValueError, EOFError, RuntimeError) as exc:  # too few bytes for the frame, a broken codestream
        raise _fail(path, f"its pixel data ({syntax_name(ts)}) is incomplete or damaged; copy or "
                          "export the file again.") from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        if arr.dtype != np.uint8:  # 16-bit palette entries
            arr = (arr >> 8).astype(np.uint8)
    elif arr.ndim == 2:
        arr = _rescale(arr, ds, frame)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    monochrome = arr.ndim == 2
    number = ds.get("InstanceNumber")
    return DicomImage(
        pixels=_normalise(path, arr),
        path=str(path),
        frame=frame if total > 1 else None,
        n_frames=total,
        modality=str(ds.get("Modality", "") or ""),
        series_description=str(ds.get("SeriesDescription", "") or ""),
        instance_number=int(to_number(number, 0)) if number not in (None, "") else None,
        windows=_windows(ds, frame) if monochrome else (),
        voi_lut=_voi_lut(ds) if monochrome else None,
        invert=monochrome and photometric == "MONOCHROME1",
        transfer_syntax=str(ts),
        uid_key=uid_hash(ds.get("SOPInstanceUID", "")) if ds.get("SOPInstanceUID") else "",
    )
