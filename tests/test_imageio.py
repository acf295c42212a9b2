"""Image reading on real files written to tmp_path."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from segdesk.core.errors import ImageReadError
from segdesk.core.display import to_display
from segdesk.core.image import Image
from segdesk.core.imageio import SUPPORTED_SUFFIXES, read_image, read_image_size

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RNG = np.random.default_rng(0)


def _rgb(h=12, w=17, dtype=np.uint8, high=256):
    return RNG.integers(0, high, (h, w, 3)).astype(dtype)


def _write_cv2(path: Path, rgb_or_gray: np.ndarray) -> Path:
    arr = rgb_or_gray
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(path.suffix, arr)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _png_bytes(arr: np.ndarray) -> bytes:
    return cv2.imencode(".png", arr)[1].tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _raw_png(w: int, h: int, bit_depth: int, color_type: int, rows: bytes, extra: bytes = b"") -> bytes:
    """A PNG built chunk by chunk, for colour types OpenCV cannot write (palette, gray + alpha)."""
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra
            + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))


# --- round trips ---------------------------------------------------------------------------------

def test_png_8bit_gray_and_rgb_exact(tmp_path):
    gray = RNG.integers(0, 256, (9, 14), dtype=np.uint8)
    img = read_image(_write_cv2(tmp_path / "g.png", gray))
    assert isinstance(img, Image) and not img.is_color and img.bit_depth == 8
    assert img.shape2d == (9, 14) and img.height == 9 and img.width == 14
    np.testing.assert_array_equal(img.pixels, gray)

    rgb = _rgb()
    img = read_image(_write_cv2(tmp_path / "c.png", rgb))
    assert img.is_color and img.pixels.flags.c_contiguous and img.path.endswith("c.png")
    np.testing.assert_array_equal(img.pixels, rgb)


def test_png_rgba_drops_alpha_keeps_rgb_order(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 7, 30
    img = read_image(_write_cv2(tmp_path / "a.png", rgba))
    assert img.pixels.shape == (4, 5, 3)
    assert img.pixels[2, 3].tolist() == [200, 100, 7]


def test_png_palette_and_gray_alpha(tmp_path):
    palette = _chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255]))
    (tmp_path / "pal.png").write_bytes(_raw_png(2, 2, 8, 3, b"\x00\x00\x01\x00\x02\x00", palette))
    img = read_image(tmp_path / "pal.png")
    assert img.pixels.tolist() == [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 0, 0]]]

    rows = b"\x00" + bytes([10, 255, 20, 128]) + b"\x00" + bytes([30, 0, 40, 255])
    (tmp_path / "ga.png").write_bytes(_raw_png(2, 2, 8, 4, rows))
    img = read_image(tmp_path / "ga.png")
    assert not img.is_color and img.pixels.tolist() == [[10, 20], [30, 40]]


def test_png_16bit_gray_values_kept(tmp_path):
    gray = RNG.integers(0, 65536, (8, 11)).astype(np.uint16)
    gray[0, 0] = 65535
    img = read_image(_write_cv2(tmp_path / "g16.png", gray))
    assert img.pixels.dtype == np.uint16 and img.bit_depth == 16
    np.testing.assert_array_equal(img.pixels, gray)


def test_jpeg_approximate_and_bmp_exact(tmp_path):
    rgb = np.full((16, 24, 3), (180, 60, 20), np.uint8)
    img = read_image(_write_cv2(tmp_path / "c.jpg", rgb))
    assert img.pixels.shape == (16, 24, 3) and img.pixels.dtype == np.uint8
    assert np.abs(img.pixels.astype(int) - rgb).max() <= 4

    rgb = _rgb()
    np.testing.assert_array_equal(read_image(_write_cv2(tmp_path / "c.bmp", rgb)).pixels, rgb)


@pytest.mark.parametrize("arr", [
    RNG.integers(0, 256, (7, 9), dtype=np.uint8),
    RNG.integers(0, 65536, (7, 9)).astype(np.uint16),
    _rgb(7, 9),
    _rgb(7, 9, np.uint16, 65536),
    RNG.standard_normal((7, 9)).astype(np.float32),
], ids=["u8", "u16", "rgb8", "rgb16", "f32"])
def test_tiff_exact(tmp_path, arr):
    tifffile.imwrite(tmp_path / "t.tif", arr)
    img = read_image(tmp_path / "t.tif")
    assert img.pixels.dtype == arr.dtype
    np.testing.assert_array_equal(img.pixels, arr)


def test_tiff_special_layouts(tmp_path, caplog):
    pages = RNG.integers(0, 4000, (3, 6, 5)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", pages, photometric="minisblack")
    np.testing.assert_array_equal(read_image(tmp_path / "stack.tif").pixels, pages[0])
    assert "first" in caplog.text

    planar = _rgb(6, 5).transpose(2, 0, 1).copy()  # samples first: (3, H, W)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif").pixels, planar.transpose(1, 2, 0))

    mask = RNG.integers(0, 2, (6, 5)).astype(bool)
    tifffile.imwrite(tmp_path / "bool.tif", mask)
    img = read_image(tmp_path / "bool.tif")
    assert img.pixels.dtype == np.uint8
    np.testing.assert_array_equal(img.pixels, mask * 255)

    tifffile.imwrite(tmp_path / "f64.tif", np.eye(4))
    assert read_image(tmp_path / "f64.tif").pixels.dtype == np.float32


def test_lzw_tiff_falls_back_to_opencv(tmp_path):
    rgb = _rgb()
    path = tmp_path / "lzw.tif"  # OpenCV writes LZW, which tifffile needs imagecodecs for
    path.write_bytes(cv2.imencode(".tif", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes())
    np.testing.assert_array_equal(read_image(path).pixels, rgb)


def test_content_decides_format_and_unicode_path(tmp_path):
    rgb = np.full((10, 10, 3), 128, np.uint8)
    path = tmp_path / "wirklich_ein_jpeg_äöü.png"
    path.write_bytes(cv2.imencode(".jpg", rgb)[1].tobytes())
    img = read_image(path)
    assert img.pixels.shape == (10, 10, 3)
    assert read_image_size(path) == (10, 10)


def test_read_image_size_every_format(tmp_path):
    arr = _rgb(13, 21)
    for suffix in (".png", ".jpg", ".bmp"):
        assert read_image_size(_write_cv2(tmp_path / f"x{suffix}", arr)) == (13, 21)
    tifffile.imwrite(tmp_path / "x.tif", arr)
    assert read_image_size(tmp_path / "x.tif") == (13, 21)


# --- errors -------------------------------------------------------------------------------------

def _assert_refused(path, *words, **kwargs):
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert Path(path).name in message
    for word in words:
        assert word in message.lower(), message
    return message


def test_missing_folder_empty_and_text(tmp_path):
    _assert_refused(tmp_path / "nope.png", "does not exist")
    (tmp_path / "dir.png").mkdir()
    _assert_refused(tmp_path / "dir.png", "folder")
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_refused(tmp_path / "empty.png", "empty")
    (tmp_path / "notes.png").write_text("not an image at all, just text\n" * 10)
    _assert_refused(tmp_path / "notes.png", "format")
    with pytest.raises(ImageReadError):
        read_image_size(tmp_path / "notes.png")
    (tmp_path / "scan.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    _assert_refused(tmp_path / "scan.dcm", "dicom")
    (tmp_path / "magic_only.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk")
    _assert_refused(tmp_path / "magic_only.png", "damaged")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_truncated_files_refused(tmp_path, suffix):
    arr = _rgb(40, 50)
    full = tmp_path / f"full{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(full, arr)
    else:
        _write_cv2(full, arr)
    cut = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    _assert_refused(cut)


def _png_with_size(width: int, height: int) -> bytes:
    data = bytearray(_png_bytes(np.zeros((2, 2), np.uint8)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def test_header_size_bomb_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_size(100_000, 100_000))
    assert read_image_size(path) == (100_000, 100_000)
    tracemalloc.start()
    try:
        _assert_refused(path, "size", "100000 x 100000")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_max_pixels_parameter(tmp_path):
    path = _write_cv2(tmp_path / "small.png", np.zeros((10, 10), np.uint8))
    assert read_image(path, max_pixels=100).pixels.shape == (10, 10)
    _assert_refused(path, "too large", max_pixels=99)
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((10, 10), np.uint8))
    _assert_refused(tmp_path / "small.tif", "too large", max_pixels=99)


def test_unsupported_pixel_types(tmp_path):
    tifffile.imwrite(tmp_path / "complex.tif", np.zeros((4, 4), np.complex64))
    _assert_refused(tmp_path / "complex.tif", "pixel type")
    two = np.zeros((4, 4, 2), np.uint8)
    tifffile.imwrite(tmp_path / "two.tif", two, photometric="minisblack", planarconfig="contig")
    _assert_refused(tmp_path / "two.tif", "channels")


def test_supported_suffixes():
    assert SUPPORTED_SUFFIXES == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"}


@pytest.mark.data
@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent")
def test_real_data_sets():
    expect = {"dsb2018_nuclei": 3, "isbi2012_em": 2, "kvasir_seg": 3}
    for name, ndim in expect.items():
        first = sorted((DATA / name / "images").iterdir())[0]
        img = read_image(first)
        assert img.pixels.dtype == np.uint8 and img.pixels.ndim == ndim, (first, img.pixels.shape)
        assert read_image_size(first) == img.shape2d
        assert to_display(img.pixels).shape == (*img.shape2d, 3)
