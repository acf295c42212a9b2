"""Plausibility checks run before a decoder allocates an image's pixels.

A header can claim any size. The pixel limit (image.MAX_PIXELS) stops absurd sizes, but a
damaged 1 KB file that claims 15000 x 15000 pixels is within it, and decoders allocate (and
often fill) the whole image before they notice the data ran out: found by fuzzing
(segdesk.reliability.fuzz), a 96-byte PNG made OpenCV allocate 512 MB, a 1 KB JPEG decoded to a
225-megapixel grey picture, a TIFF with a damaged SamplesPerPixel asked tifffile for 18 GB.

Each check compares what the header promises with what the file can hold, using the most a codec
can compress (deflate: 1032:1, Huffman JPEG: at least 1 bit per 8 x 8 block in its first scan,
PackBits: 128:1, LZW: < 4096:1). A valid file always passes; a damaged one is refused with a
message before anything large is allocated. The functions return a problem in words, or None.
"""

from __future__ import annotations

import io
import os
import struct
import zlib

# Largest decoded bytes per pixel a TIFF page may need: RGBA float32 (4 x 4 bytes).
MAX_TIFF_BYTES_PER_PIXEL = 16
_DEFLATE_RATIO = 1100  # deflate's limit is 1032:1; a little slack for zlib and PNG headers
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_JPEG_PIXELS_PER_BYTE = 1024  # Huffman-coded scans need >= 2 bits per 8x8 block (1 in a DC-only scan)
_JPEG_ARITHMETIC = frozenset((0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_BMP_PIXELS_PER_BYTE = 16384  # RLE with delta escapes: at most 255 x 255 pixels skipped in 4 bytes
# TIFF compression tag -> most decoded bytes per stored byte (None: no bound known)
_TIFF_RATIO = {1: 1, 5: 4096, 8: _DEFLATE_RATIO, 32946: _DEFLATE_RATIO, 32773: 130}
_SLACK_BYTES = 4096


def png_chunks(data: bytes) -> tuple[int, list[bytes]]:
    """(total IDAT bytes, chunk types) of a PNG; ValueError when a chunk runs past the file's end
    (OpenCV allocates a chunk's declared length before reading it)."""
    p, idat, kinds = 8, 0, []
    while p + 8 <= len(data):
        length = struct.unpack(">I", data[p:p + 4])[0]
        kind = bytes(data[p + 4:p + 8])
        if p + 12 + length > len(data):
            raise ValueError(f"its {kind.decode('latin-1')!r} chunk claims {length} bytes, more than "
                             "the file holds")
        kinds.append(kind)
        if kind == b"IDAT":
            idat += length
        if kind == b"IEND":
            break
        p += 12 + length
    return idat, kinds


def png_problem(data: bytes, h: int, w: int) -> str | None:
    try:
        idat, kinds = png_chunks(data)
    except ValueError as exc:
        return str(exc)
    if not kinds or kinds[0] != b"IHDR" or len(data) < 29:
        return "it has no PNG header chunk first"
    depth, colour = data[24], data[25]
    channels = _PNG_CHANNELS.get(colour, 4)
    raw = h * (1 + (w * channels * max(depth, 1) + 7) // 8)  # filter byte + packed row
    if raw > _DEFLATE_RATIO * idat + _SLACK_BYTES:
        return (f"it holds {idat} bytes of image data, too few for {w} x {h} pixels "
                "(damaged size in its header?)")
    return None


def jpeg_problem(data: bytes, h: int, w: int, scan_start: int) -> str | None:
    header = data[:scan_start]
    if any(b"\xff" + bytes([m]) in header for m in _JPEG_ARITHMETIC):
        return None  # arithmetic coding can go below one bit per block: no bound
    scan = len(data) - scan_start
    if h * w > _JPEG_PIXELS_PER_BYTE * scan + _SLACK_BYTES * 64:
        return (f"it holds {scan} bytes of image data, too few for {w} x {h} pixels "
                "(damaged size in its header?)")
    return None


def bmp_problem(file_size: int, h: int, w: int) -> str | None:
    if h * w > _BMP_PIXELS_PER_BYTE * file_size:
        return f"the file ({file_size} bytes) is too small for {w} x {h} pixels (damaged header?)"
    return None


def tiff_problem(page, h: int, w: int) -> str | None:
    """The first page's decoded size against its pixel count and its stored bytes."""
    try:
        shape = tuple(int(n) for n in page.shaped)
        itemsize = int(page.dtype.itemsize) if page.dtype is not None else 1
        bits = int(page.bitspersample)
        compression = int(page.compression)
        stored = sum(int(n) for n in page.databytecounts)
    except (TypeError, ValueError, AttributeError) as exc:
        return f"its layout cannot be understood ({exc})"
    samples = 1
    for n in shape:
        samples *= max(n, 1)
    decoded = samples * itemsize
    if decoded > MAX_TIFF_BYTES_PER_PIXEL * h * w:
        per_pixel = samples // max(h * w, 1)
        return (f"it has {per_pixel} values per pixel (samples x depth); segdesk reads gray, RGB and "
                "RGBA images")
    ratio = _TIFF_RATIO.get(compression)
    packed = (samples * max(bits, 1) + 7) // 8
    if ratio is not None and packed > ratio * 2 * stored + _SLACK_BYTES:
        return (f"it holds {stored} bytes of image data, too few for {w} x {h} pixels "
                "(damaged size in its header?)")
    return None


def inflated_size_problem(stream, limit: int) -> str | None:
    """Inflate the raw deflate data left in ``stream`` a chunk at a time, keeping none of it; say so
    when it comes to more than ``limit`` bytes (a deflated DICOM data set is inflated whole)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    while not inflater.eof and (chunk := stream.read(1 << 20)):
        while chunk:
            total += len(inflater.decompress(chunk, 1 << 22))
            if total > limit:
                return f"its deflated data set inflates to more than {limit / 1024**2:.0f} MB"
            chunk = inflater.unconsumed_tail
    return None


class BoundedReader(io.BufferedReader):
    """A binary file whose ``read(n)`` never asks for more than what is left in the file.

    Parsers such as pydicom read a value by its declared length: a damaged length of 3 GB made
    Python allocate 3 GB for a 2 KB file (found by fuzzing). Capped, the read is short and the
    parser reports the damage instead.
    """

    def __init__(self, path):
        super().__init__(io.FileIO(os.fspath(path), "rb"))
        self._size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = min(size, max(0, self._size - self.tell()))
        return super().read(size)
