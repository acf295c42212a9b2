"""Reading images from disk: PNG, JPEG, TIFF and BMP here; DICOM files are handed to ``dicom``.

The format is judged by the file's first bytes, not its suffix. Width and height come from the
header and are checked against a pixel limit before anything is decoded, so a hostile or damaged
file cannot make us allocate gigabytes. Truncated files are refused rather than shown half-grey.
Pixels keep their original dtype and values (16-bit stays 16-bit); only ``display.to_display``
makes uint8.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
import tifffile

from segdesk.core import decode_limits
from segdesk.core.errors import ImageReadError
from segdesk.core.image import MAX_FILE_BYTES, MAX_PIXELS, Image, check_pixels, normalise, read_error

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"})
FORMATS_TEXT = "PNG, JPEG, BMP, TIFF (8 or 16 bits) and DICOM files"  # what users are told it reads

# (offset, magic bytes, format). Formats we do not read are named for a clearer message.
_MAGICS = (  # DICOM first: a DICOM file's 128-byte preamble may hold a TIFF header
    (128, b"DICM", "DICOM"),
    (0, b"\x89PNG\r\n\x1a\n", "png"), (0, b"\xff\xd8\xff", "jpeg"), (0, b"BM", "bmp"),
    (0, b"II*\x00", "tiff"), (0, b"MM\x00*", "tiff"), (0, b"II+\x00", "tiff"), (0, b"MM\x00+", "tiff"),
    (0, b"GIF8", "GIF"), (8, b"WEBP", "WebP"),
    (4, b"jP  ", "JPEG 2000"), (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
)
_SUFFIX_FORMAT = {
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff",
    ".dcm": "DICOM",
}
# JPEG start-of-frame markers (C0..CF except DHT C4, JPG C8, DAC CC): they carry the image size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_TRUNCATED = "the {} file is incomplete (cut short); copy or export it again."


def _damaged(path, e: Exception) -> ImageReadError:
    detail = " (it ends too early)" if isinstance(e, EOFError) else f" ({e})" if str(e) else ""
    return read_error(path, f"the file is damaged, incomplete or in a form segdesk cannot read{detail}.")


def _detect(path) -> tuple[int, str]:
    """(file size, format from the magic bytes); raises for a missing, empty, huge or unknown file."""
    p = Path(path)
    if not p.exists():
        raise read_error(path, "the file does not exist (was it moved, renamed or deleted?).")
    if p.is_dir():
        raise read_error(path, "this is a folder, not an image file.")
    size = p.stat().st_size
    if size == 0:
        raise read_error(path, "the file is empty (0 bytes); it may not have finished copying.")
    if size > MAX_FILE_BYTES:
        limit_gb = MAX_FILE_BYTES // 1024**3
        raise read_error(path, f"the file is {size / 1024**3:.1f} GB, over the {limit_gb} GB limit.")
    with open(p, "rb") as f:
        head = f.read(132)
    for offset, magic, kind in _MAGICS:
        if head[offset:offset + len(magic)] == magic:
            break
    else:  # DICOM without the 128-byte preamble
        kind = "DICOM" if p.suffix.lower() == ".dcm" or is_bare_dicom(head) else ""
    if not kind:
        raise read_error(path, "it is not a PNG, JPEG, BMP, TIFF or DICOM image (its content is not a known "
                               "image format). Convert it to PNG or TIFF and try again.")
    if kind not in _SUFFIX_FORMAT.values():
        raise read_error(path, f"it is a {kind} file, which segdesk cannot open yet. "
                               "Convert it to PNG or TIFF and try again.")
    if _SUFFIX_FORMAT.get(p.suffix.lower()) != kind and kind != "DICOM":  # DICOM often has no suffix
        log.info("%s holds %s data whatever its suffix says; reading it as %s", path, kind, kind)
    return size, kind


def is_dicom_head(head: bytes) -> bool:
    """Whether a file's first 132 bytes are DICOM's: 'DICM' after the preamble, or a bare data set."""
    return head[128:132] == b"DICM" or is_bare_dicom(head)


def is_bare_dicom(head: bytes) -> bool:
    """A DICOM data set without preamble and 'DICM' (some old writers; pydicom reads it): it starts
    with a little-endian element of group 0002 (file meta) or 0008, explicit VR or implicit."""
    if len(head) < 8 or head[:2] not in (b"\x02\x00", b"\x08\x00") or head[3] != 0:
        return False
    vr = head[4:6]
    return (vr.isalpha() and vr.isupper()) or struct.unpack("<I", head[4:8])[0] < 1 << 16


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _png_header(f: BinaryIO) -> tuple[int, int, int]:
    """(H, W, colour type) from IHDR, which the PNG standard puts first."""
    head = _read_exact(f, 26)
    if head[12:16] != b"IHDR":
        raise ValueError("PNG without IHDR header")
    w, h = struct.unpack(">II", head[16:24])
    return h, w, head[25]


def _jpeg_header(f: BinaryIO) -> tuple[int, int, int]:
    """(H, W, offset of the first start-of-scan), walking the marker segments up to SOS."""
    f.seek(2)
    size = None
    while True:
        if _read_exact(f, 1) != b"\xff":
            raise ValueError("JPEG marker expected")
        marker = _read_exact(f, 1)[0]
        while marker == 0xFF:  # fill bytes
            marker = _read_exact(f, 1)[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers, no length
            continue
        if marker == 0xD9:
            raise ValueError("JPEG ends before its image data")
        seg_len = struct.unpack(">H", _read_exact(f, 2))[0]
        if seg_len < (7 if marker in _JPEG_SOF else 2):
            raise ValueError("JPEG segment with an impossible length")
        if marker == 0xDA:
            if size is None:
                raise ValueError("JPEG without a frame header")
            return size[0], size[1], f.tell()
        if marker in _JPEG_SOF:
            size = struct.unpack(">xHH", _read_exact(f, 5))
            f.seek(seg_len - 7, io.SEEK_CUR)
        else:
            f.seek(seg_len - 2, io.SEEK_CUR)


def _bmp_header(f: BinaryIO) -> tuple[int, int, int]:
    """(H, W, file size the pixel rows need, or 0 when compressed)."""
    head = f.read(34)
    if len(head) < 26:
        raise EOFError
    off_bits, dib_size = struct.unpack("<II", head[10:18])
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER
        (w, h, _, bpp), compression = struct.unpack("<HHHH", head[18:26]), 0
    else:
        w, h, _, bpp, compression = struct.unpack("<iiHHI", head.ljust(34, b"\0")[18:34])
    h, w = abs(h), abs(w)  # negative height: rows stored top-down
    return h, w, off_bits + ((w * bpp + 31) // 32) * 4 * h if compression in (0, 3, 6) else 0


_HEADERS = {"png": _png_header, "jpeg": _jpeg_header, "bmp": _bmp_header}


def _decode_cv2(path, data: bytes, kind: str, h: int, w: int, gray_png: bool = False) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.shape[:2] != (h, w):
        raise read_error(path, f"the {kind.upper()} data is damaged and cannot be decoded.")
    if arr.ndim == 2:
        return arr
    if gray_png or arr.shape[2] == 1:  # libpng expands gray + alpha (or tRNS) to BGRA
        return arr[:, :, 0]
    if arr.shape[2] == 3:  # in place: no second copy of a large image
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)
    return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)


def _read_raster(path, kind: str, file_size: int, max_pixels: int) -> np.ndarray:
    """PNG, JPEG, BMP: size from the header, completeness check, then decode through OpenCV."""
    with open(path, "rb") as f:  # Python's open, not cv2.imread, so non-ASCII paths work
        h, w, extra = _HEADERS[kind](f)
        check_pixels(path, h, w, max_pixels)
        f.seek(0)
        data = f.read()
    # A complete PNG ends with IEND (zero length, fixed CRC). JPEG scan data cannot hold FF D9
    # (FF is byte-stuffed), so an end marker after the start of scan means the JPEG is complete.
    if kind == "png" and data.rfind(b"\x00\x00\x00\x00IEND\xae\x42\x60\x82") < 0:
        raise read_error(path, _TRUNCATED.format("PNG"))
    if kind == "jpeg" and data.rfind(b"\xff\xd9", extra) < 0:
        raise read_error(path, _TRUNCATED.format("JPEG"))
    if kind == "bmp" and extra > file_size:
        raise read_error(path, _TRUNCATED.format("BMP"))
    problem = (decode_limits.png_problem(data, h, w) if kind == "png"
               else decode_limits.jpeg_problem(data, h, w, extra) if kind == "jpeg"
               else decode_limits.bmp_problem(file_size, h, w) if extra == 0 else None)
    if problem:  # checked before the decoder allocates the pixels the header promises
        raise read_error(path, f"{problem}.")
    return _decode_cv2(path, data, kind, h, w, gray_png=kind == "png" and extra in (0, 4))


def _tiff_pixels(path, page) -> np.ndarray:
    """First plane of a TIFF page as (H, W) gray or (H, W, 3) RGB."""
    arr = page.asarray().reshape(page.shaped)[:, 0]  # (separate samples, [depth], H, W, contig samples)
    arr = np.moveaxis(arr[..., 0], 0, -1) if arr.shape[0] > 1 else arr[0]  # samples first -> last
    arr = arr[..., 0] if arr.shape[-1] == 1 else arr
    photometric, extras = int(page.photometric), [int(e) for e in page.extrasamples or ()]
    if photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None and arr.ndim == 2:
        cmap = page.colormap
        cmap = (cmap / 257).round() if cmap.max() > 255 else cmap  # 16-bit palette entries
        return cmap.astype(np.uint8).T[arr]
    if photometric == tifffile.PHOTOMETRIC.MINISWHITE and arr.dtype.kind == "u":  # 0 means white
        arr = (2 ** min(page.bitspersample, arr.dtype.itemsize * 8) - 1) - arr
    if arr.ndim == 2:
        return arr
    if photometric == tifffile.PHOTOMETRIC.RGB and arr.shape[-1] >= 3:
        return arr[..., :3]
    if photometric in (0, 1) and all(e in (1, 2) for e in extras) and arr.shape[-1] == 1 + len(extras):
        return arr[..., 0]  # gray + alpha
    raise read_error(path, f"the TIFF has {arr.shape[-1]} channels per pixel; segdesk reads gray, RGB and "
                           "RGBA images. Save one channel or an RGB composite instead.")


def _read_tiff(path, file_size: int, max_pixels: int) -> np.ndarray:
    problem: Exception | None = None
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        h, w = int(page.imagelength), int(page.imagewidth)
        check_pixels(path, h, w, max_pixels)
        problem = decode_limits.tiff_problem(page, h, w)
        if problem:  # checked before tifffile allocates what the header promises
            raise read_error(path, f"{problem}.")
        if len(tif.pages) > 1 or page.imagedepth > 1:
            log.warning("%s holds %d pages (depth %d); reading only the first plane",
                        path, len(tif.pages), page.imagedepth)
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n]
        if not ends or max(ends) > file_size:
            raise read_error(path, _TRUNCATED.format("TIFF"))
        if int(page.photometric) in (0, 1, 2, 3):  # gray, RGB, palette
            try:
                return _tiff_pixels(path, page)
            except (ImageReadError, MemoryError):
                raise
            except Exception as e:  # noqa: BLE001 - mostly a codec tifffile needs imagecodecs for
                problem = e
    # LZW, JPEG, CMYK, YCbCr...: libtiff inside OpenCV decodes what tifffile cannot on its own.
    log.debug("decoding %s through OpenCV (tifffile: %s)", path, problem)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _decode_cv2(path, data, "tiff", h, w)
    except ImageReadError:
        if problem is not None:
            raise _damaged(path, problem) from problem
        raise


def read_image(path: os.PathLike | str, max_pixels: int = MAX_PIXELS, frame: int | None = None) -> Image:
    """Read a 2D image (``frame``: 0-based frame of a multi-frame DICOM file). Raises ImageReadError,
    with a message fit to show the user, on any failure."""
    try:
        size, kind = _detect(path)
        if kind == "DICOM":
            from segdesk.core import dicom  # pydicom is imported only when a DICOM file is read

            return dicom.read_dicom(path, frame, max_pixels)
        if kind == "tiff":
            arr = _read_tiff(path, size, max_pixels)
        else:
            arr = _read_raster(path, kind, size, max_pixels)
        return Image(pixels=normalise(path, arr), path=str(path))
    except ImageReadError:
        raise
    except MemoryError as e:
        raise read_error(path, "there is not enough memory to open it.") from e
    except OSError as e:
        raise read_error(path, f"the file cannot be read ({e.strerror or e}).") from e
    except Exception as e:  # noqa: BLE001 - the boundary: cv2.error, TiffFileError, EOFError...
        log.debug("reading %s failed", path, exc_info=True)
        raise _damaged(path, e) from e


def read_image_size(path: os.PathLike | str) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    try:
        _, kind = _detect(path)
        with open(path, "rb") as f:
            if kind == "DICOM":
                from segdesk.core import dicom

                h, w = dicom.read_size(path)
            elif kind == "tiff":
                with tifffile.TiffFile(f) as tif:
                    h, w = int(tif.pages.first.imagelength), int(tif.pages.first.imagewidth)
            else:
                h, w, _ = _HEADERS[kind](f)
        check_pixels(path, h, w, max_pixels=h * w)
        return h, w
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001 - see read_image
        raise _damaged(path, e) from e
