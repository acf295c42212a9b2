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
import re
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import dictionary_description
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)

from segdesk.core.dicom_image import DicomImage, image_id, uid_hash  # noqa: F401 - image_id re-exported
from segdesk.core.dicom_image import window_from_center_width
from segdesk.core.decode_limits import BoundedReader, inflated_size_problem
from segdesk.core.errors import ImageReadError
from segdesk.core.image import MAX_FILE_BYTES, MAX_PIXELS, check_pixels, normalise, read_error

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
# What pydicom's pixel decoders read from the Image Pixel module (Number of Frames when present).
_PIXEL_DESCRIPTION = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored",
                      "PixelRepresentation", "PhotometricInterpretation")
_PIXEL_NUMBERS = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored",
                  "PixelRepresentation", "NumberOfFrames")
_PIXEL_DATA = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# pydicom's errors for no pixel data, a header value missing or not a number, too few bytes, a
# broken codestream (RuntimeError: every decoder plugin failed)
_DECODE_ERRORS = (AttributeError, KeyError, TypeError, ValueError, EOFError, RuntimeError)
# pydicom names a decoder's requirements by module; pip names the package differently for these.
_PIP_NAMES = {"gdcm": "python-gdcm"}


def syntax_name(uid: str) -> str:
    return _SYNTAX_NAMES.get(str(uid)) or UID(str(uid)).name


# ----- header helpers


def read_header(path: os.PathLike | str, tags: list | None = None) -> Dataset:
    """Every element up to the pixel data (only ``tags`` when given). ``force`` so files without
    the 128-byte preamble read."""
    with BoundedReader(path) as f:  # a damaged length cannot make Python allocate gigabytes
        _check_inflated_size(path, f)
        f.seek(0)
        return pydicom.dcmread(f, stop_before_pixels=True, force=True, specific_tags=tags)


def _check_inflated_size(path, f) -> None:
    """pydicom inflates a deflated data set whole before reading any of it: refuse one that would
    inflate past the file size limit (a few MB of deflate can claim gigabytes)."""
    try:
        pydicom.filereader.read_preamble(f, force=True)
        meta = pydicom.filereader.read_dataset(  # explicit VR little endian, by the standard
            f, is_implicit_VR=False, is_little_endian=True, stop_when=lambda tag, *_: tag.group != 2)
        deflated = meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    except Exception:  # noqa: BLE001 - no readable file meta: dcmread reports the damage
        return
    if deflated:
        problem = inflated_size_problem(f, MAX_FILE_BYTES)
        if problem:
            raise read_error(path, f"{problem}, over segdesk's limit; the file is damaged or far larger "
                                   "than an image needs.")


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


def pip_installs(missing_dependencies: list[str]) -> list[str]:
    """'pip install ...' commands from pydicom's missing-dependency lines, one per decoder plugin:
    'pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0' -> 'pip install pylibjpeg
    pylibjpeg-openjpeg'."""
    commands = []
    for line in missing_dependencies:
        _, _, requires = line.partition(" - requires ")
        names = []
        for requirement in re.split(r",|\band\b", requires):
            name = re.match(r"[\w.\-]*", requirement.strip()).group()  # the name before '>=2.0'
            if name:
                names.append(_PIP_NAMES.get(name, name))
        if names:
            commands.append("pip install " + " ".join(names))
    return commands


def _check_decodable(path, ts: UID) -> None:
    name = syntax_name(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise read_error(path, f"its pixel data is encoded as {name} (transfer syntax {ts}), which segdesk "
                               "cannot decode. Export it from the PACS or scanner as uncompressed "
                               "(Explicit VR Little Endian), JPEG, JPEG-LS, JPEG 2000 or RLE.") from None
    if not decoder.is_available:
        installs = pip_installs(decoder.missing_dependencies)
        fix = f"; any one of these adds one: {' | '.join(installs)}" if installs else ""
        raise read_error(path, f"its pixel data is encoded as {name} (transfer syntax {ts}), and no decoder "
                               f"for it is installed{fix}.")


# ----- reading


def read_size(path: os.PathLike | str) -> tuple[int, int]:
    ds = read_header(path)
    _check_image(path, ds)
    return int(ds.Rows), int(ds.Columns)


def _check_image(path, ds: Dataset) -> None:
    """Raise when the header describes no image: no pixel data, or pixel data without its size
    (whether the size is possible, check_pixels says)."""
    if ds.get("Rows") not in (None, "") and ds.get("Columns") not in (None, ""):
        return
    if not _has_pixel_data(path):
        raise _not_image(path, ds)
    raise _bad_description(path, ds)  # never None here: Rows or Columns has no value


def _has_pixel_data(path) -> bool:
    """The header stops before the pixel data, so a header without Rows does not tell."""
    with BoundedReader(path) as f:  # values over 1 KB are skipped, not read
        ds = pydicom.dcmread(f, force=True, defer_size=1024)
    return any(k in ds for k in _PIXEL_DATA)


def _not_image(path, ds: Dataset) -> ImageReadError:
    kind = ""
    sop = ds.get("SOPClassUID")
    if sop:
        kind = f" ({UID(str(sop)).name})"
    return read_error(path, f"it is a DICOM file without an image{kind}, e.g. a report, structure set or "
                            "DICOMDIR; add the image files of the series instead.")


def _bad_description(path, ds: Dataset) -> ImageReadError | None:
    """The error for pixel data whose Image Pixel module lacks a value, or holds one that is not a
    number; None when the module is complete."""
    def bad(keyword: str) -> bool:
        value = ds.get(keyword)
        if value in (None, ""):
            return keyword != "NumberOfFrames"  # the only optional one
        return keyword in _PIXEL_NUMBERS and not np.isfinite(to_number(value, np.nan))

    wrong = [k for k in (*_PIXEL_DESCRIPTION, "NumberOfFrames") if bad(k)]
    if not wrong:
        return None
    names = ", ".join(dictionary_description(k) for k in wrong)  # keyword -> "Bits Allocated"
    return read_error(path, f"it holds pixel data, but its header has no valid {names}, which decoding "
                            "the image needs; the file was written wrongly or is damaged.")


def _decode_failure(path, ds: Dataset, ts: UID, exc: Exception) -> ImageReadError:
    """The true reason pydicom could not decode the pixels, in words."""
    if not _has_pixel_data(path):
        return _not_image(path, ds)
    described = _bad_description(path, ds)
    if described is not None:
        return described
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = "; ".join(lines[1:] if len(lines) > 1 else lines)  # all plugins failed: one line each
    detail = f" ({detail[:300]})" if detail else ""
    installs = pip_installs(get_decoder(ts).missing_dependencies) if ts.is_compressed else []
    other = (f" Another decoder may read it: {' | '.join(installs)}." if installs
             and isinstance(exc, RuntimeError) else "")
    return read_error(path, f"its pixel data ({syntax_name(ts)}) is incomplete or damaged{detail}; copy or "
                            f"export the file again.{other}")


def _decode(path, ds: Dataset, ts: UID, frame: int) -> np.ndarray:
    """Decoded stored values of one frame; YBR colour comes back as RGB."""
    meta = getattr(ds, "file_meta", Dataset())
    if meta.get("TransferSyntaxUID") and ts != DeflatedExplicitVRLittleEndian:
        try:
            with BoundedReader(path) as f:  # from the file: only this frame's bytes are read
                return pixel_array(f, index=frame)
        except _DECODE_ERRORS:
            # pixel_array(file) parses by the transfer syntax alone; dcmread copes with more (a
            # Pixel Data element in another VR encoding than the rest, say): try that before refusing
            log.debug("decoding %s from the file failed; reading it whole", Path(path).name)
    with BoundedReader(path) as f:  # a bare data set, a deflated one, or one pixel_array refused
        full = pydicom.dcmread(f, force=True)
    if not getattr(full, "file_meta", Dataset()).get("TransferSyntaxUID"):
        full.file_meta = pydicom.dataset.FileMetaDataset()  # a bare data set: the encoding found
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
    _check_image(path, ds)
    rows, cols = int(ds.Rows), int(ds.Columns)
    check_pixels(path, rows, cols, max_pixels)
    total = n_frames(ds)
    index = frame if frame is not None else 0
    if not 0 <= index < total:
        raise read_error(path, f"it holds {total} frame(s), so frame {index + 1} does not exist; "
                               "was the file replaced?")
    if frame is None and total > 1:
        log.debug("%s holds %d frames; reading the first", Path(path).name, total)
    ts = _transfer_syntax(ds)
    _check_decodable(path, ts)
    try:
        arr = _decode(path, ds, ts, index)
    except _DECODE_ERRORS as exc:
        log.debug("decoding %s failed", Path(path).name, exc_info=True)
        raise _decode_failure(path, ds, ts, exc) from exc
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
        pixels=normalise(path, arr),
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
