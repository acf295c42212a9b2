"""Valid seed files for fuzzing: small images of every supported format, in memory, deterministic."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import tifffile


@dataclass(frozen=True)
class Seed:
    name: str
    kind: str  # png, jpeg, tiff, bmp, dicom
    suffix: str
    data: bytes


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _raw_png(w: int, h: int, bit_depth: int, color_type: int, rows: bytes, extra: bytes = b"",
             interlace: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra
            + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))


def _adam7_rows(img: np.ndarray) -> bytes:
    """Filter-0 scanlines of a gray 8-bit image in Adam7 interlaced order."""
    passes = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))
    out = b""
    for y0, x0, dy, dx in passes:
        sub = img[y0::dy, x0::dx]
        if sub.size:
            out += b"".join(b"\x00" + row.tobytes() for row in sub)
    return out


def _encode(suffix: str, arr: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(suffix, arr, params or [])
    if not ok:
        raise RuntimeError(f"could not encode {suffix}")
    return buf.tobytes()


def _tiff(arr: np.ndarray, **kwargs) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, arr, **kwargs)
    return out.getvalue()


def _dicom(arr: np.ndarray) -> bytes | None:
    """A minimal explicit-VR little-endian DICOM file, when pydicom is installed."""
    try:
        import pydicom  # noqa: F401 - only to know it is installed
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    except ImportError:
        return None
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["segdesk-fuzz"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = arr.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024 if arr.dtype.kind == "i" else 0
    ds.PixelData = arr.tobytes()
    out = io.BytesIO()
    try:
        ds.save_as(out, enforce_file_format=True)
    except TypeError:  # older pydicom
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(out, write_like_original=False)
    return out.getvalue()


def image_seeds(include_dicom: bool = True) -> list[Seed]:
    rng = np.random.default_rng(1234)
    h, w = 24, 36
    gray = rng.integers(0, 256, (h, w), dtype=np.uint8)
    gray[6:18, 10:26] = 220
    gray16 = (gray.astype(np.uint16) * 257) ^ rng.integers(0, 64, (h, w), dtype=np.uint16)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    bgra = np.dstack([rgb, np.full((h, w), 200, np.uint8)])
    seeds = [
        Seed("png-gray8", "png", ".png", _encode(".png", gray)),
        Seed("png-gray16", "png", ".png", _encode(".png", gray16)),
        Seed("png-rgb8", "png", ".png", _encode(".png", rgb)),
        Seed("png-rgba8", "png", ".png", _encode(".png", bgra)),
        Seed("png-palette", "png", ".png", _raw_png(
            8, 4, 8, 3, bytes([0, 0, 1, 2, 1, 0, 2, 1, 0] * 4),
            _chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255])))),
        Seed("png-gray-alpha", "png", ".png", _raw_png(
            4, 3, 8, 4, b"".join(b"\x00" + bytes([10 * i, 255] * 4) for i in range(3)))),
        Seed("png-interlaced", "png", ".png", _raw_png(
            8, 8, 8, 0, _adam7_rows(np.arange(64, dtype=np.uint8).reshape(8, 8)), interlace=1)),
        Seed("jpeg-gray", "jpeg", ".jpg", _encode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 90])),
        Seed("jpeg-rgb", "jpeg", ".jpg", _encode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 75])),
        Seed("jpeg-progressive", "jpeg", ".jpeg",
             _encode(".jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])),
        Seed("tiff-gray8", "tiff", ".tif", _tiff(gray)),
        Seed("tiff-gray16-be", "tiff", ".tif", _tiff(gray16, byteorder=">")),
        Seed("tiff-rgb8", "tiff", ".tiff", _tiff(rgb, photometric="rgb")),
        Seed("tiff-float32", "tiff", ".tif", _tiff(rng.standard_normal((h, w)).astype(np.float32))),
        Seed("tiff-int16-zlib", "tiff", ".tif", _tiff(gray16.astype(np.int16) - 3000, compression="zlib")),
        Seed("tiff-planar", "tiff", ".tif", _tiff(rgb.transpose(2, 0, 1).copy(), photometric="rgb",
                                                  planarconfig="separate")),
        Seed("tiff-stack", "tiff", ".tif", _tiff(np.stack([gray, gray[::-1]]), photometric="minisblack")),
        Seed("tiff-tiled", "tiff", ".tif", _tiff(np.tile(gray, (2, 2)), tile=(16, 16))),
        Seed("tiff-lzw-opencv", "tiff", ".tif", _encode(".tif", rgb)),
        Seed("bmp-rgb", "bmp", ".bmp", _encode(".bmp", rgb)),
        Seed("bmp-gray", "bmp", ".bmp", _encode(".bmp", gray)),
    ]
    if include_dicom:
        dicom = _dicom((gray16 // 16).astype(np.int16))
        if dicom is not None:
            seeds.append(Seed("dicom-int16", "dicom", ".dcm", dicom))
    return seeds


def label_seed() -> tuple[bytes, tuple[int, int], int]:
    """A label PNG (0 unlabelled, 1 background, 2..3 classes), its shape and class count."""
    label = np.ones((20, 30), np.uint8)
    label[4:12, 5:20] = 2
    label[14:18, 20:28] = 3
    label[0:2, :] = 0
    return _encode(".png", label), label.shape, 2
