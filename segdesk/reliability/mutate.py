"""Hypothesis strategies that mutate valid seed files into hostile ones.

Generic byte mutations (bit flips, interesting integers, truncation, deletion, insertion,
duplication) plus format-aware header edits: PNG IHDR (optionally with a fixed CRC, so the decoder
believes it), JPEG SOF and segment lengths, TIFF IFD entries, BMP header fields, DICOM image tags,
and for project.json structural edits on the parsed document. Every case carries a description of
what was done, so a failure can be reproduced from the report alone (the bytes are saved too).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from hypothesis import strategies as st

from segdesk.reliability.seeds import Seed

INTERESTING = (
    0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 63, 64, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x7FFF,
    0x8000, 0xFFFF, 0x10000, 15_000, 30_000, 46_340, 46_341, 100_000, 1 << 20, 1 << 24,
    0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF,
)


@dataclass
class Case:
    seed: str
    suffix: str
    data: bytes
    steps: list[str]

    def describe(self) -> str:
        return f"{self.seed}{self.suffix}: " + "; ".join(self.steps)


# ----- generic byte mutations


def _pos(draw, data: bytearray, header_bias: bool = True) -> int:
    if not data:
        return 0
    if header_bias and draw(st.booleans()):
        return draw(st.integers(0, min(len(data), 96) - 1))
    return draw(st.integers(0, len(data) - 1))


def flip_bits(draw, data: bytearray, seed: Seed) -> str:
    n = draw(st.integers(1, 8))
    done = []
    for _ in range(n):
        if not data:
            break
        p, bit = _pos(draw, data), draw(st.integers(0, 7))
        data[p] ^= 1 << bit
        done.append(f"{p}.{bit}")
    return "flip " + ",".join(done)


def set_byte(draw, data: bytearray, seed: Seed) -> str:
    if not data:
        return "set_byte (empty)"
    p = _pos(draw, data)
    v = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFE, 0xFF)) | st.integers(0, 255))
    data[p] = v
    return f"byte[{p}]={v}"


def set_int(draw, data: bytearray, seed: Seed) -> str:
    width = draw(st.sampled_from((2, 4)))
    if len(data) < width:
        return "set_int (too short)"
    p = draw(st.integers(0, len(data) - width)) if not draw(st.booleans()) else \
        draw(st.integers(0, max(0, min(len(data), 96) - width)))
    v = draw(st.sampled_from(INTERESTING)) % (1 << (8 * width))
    order = draw(st.sampled_from("<>"))
    data[p:p + width] = struct.pack(order + ("H" if width == 2 else "I"), v)
    return f"int{8 * width}{order}[{p}]={v}"


def truncate(draw, data: bytearray, seed: Seed) -> str:
    n = draw(st.integers(0, max(0, len(data) - 1)))
    del data[n:]
    return f"truncate {n}"


def delete_range(draw, data: bytearray, seed: Seed) -> str:
    if not data:
        return "delete (empty)"
    p = _pos(draw, data, header_bias=False)
    n = draw(st.integers(1, 64))
    del data[p:p + n]
    return f"delete {p}+{n}"


def insert_bytes(draw, data: bytearray, seed: Seed) -> str:
    p = draw(st.integers(0, len(data)))
    blob = draw(st.binary(min_size=1, max_size=64))
    data[p:p] = blob
    return f"insert {p}+{len(blob)}"


def duplicate_range(draw, data: bytearray, seed: Seed) -> str:
    if not data:
        return "duplicate (empty)"
    p = _pos(draw, data, header_bias=False)
    n = draw(st.integers(1, 256))
    times = draw(st.integers(1, 16))
    data[p:p] = bytes(data[p:p + n]) * times
    return f"duplicate {p}+{n}x{times}"


def append_garbage(draw, data: bytearray, seed: Seed) -> str:
    blob = draw(st.binary(min_size=1, max_size=128))
    data += blob
    return f"append {len(blob)}"


# ----- format-aware header edits


def _png_chunks(data: bytearray) -> list[tuple[int, bytes, int]]:
    """(offset of the length field, type, data length) of each chunk that fits."""
    out, p = [], 8
    while p + 8 <= len(data):
        length = struct.unpack(">I", data[p:p + 4])[0]
        out.append((p, bytes(data[p + 4:p + 8]), length))
        p += 12 + length
    return out


def png_field(draw, data: bytearray, seed: Seed) -> str:
    if seed.kind != "png" or len(data) < 33:
        return flip_bits(draw, data, seed)
    field = draw(st.sampled_from(("width", "height", "both", "depth", "colour", "interlace", "chunk_len")))
    if field == "chunk_len":
        chunks = _png_chunks(data)
        if not chunks:
            return "png chunk_len (none)"
        p, kind, _ = draw(st.sampled_from(chunks))
        v = draw(st.sampled_from(INTERESTING))
        data[p:p + 4] = struct.pack(">I", v)
        return f"png {kind!r} length={v}"
    if field in ("width", "height", "both"):
        v = draw(st.sampled_from(INTERESTING) | st.integers(1, 1 << 31))
        if field in ("width", "both"):
            data[16:20] = struct.pack(">I", v)
        if field in ("height", "both"):
            data[20:24] = struct.pack(">I", draw(st.sampled_from(INTERESTING)) if field == "both" else v)
        desc = f"png {field}={v}"
    else:
        offset = {"depth": 24, "colour": 25, "interlace": 28}[field]
        v = draw(st.sampled_from((0, 1, 2, 3, 4, 6, 8, 16, 7, 255)))
        data[offset] = v
        desc = f"png {field}={v}"
    if draw(st.booleans()):  # make the CRC right, so libpng trusts the edited header
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        desc += " (crc fixed)"
    return desc


def _jpeg_segments(data: bytearray) -> list[tuple[int, int]]:
    """(offset of the marker byte after FF, marker) of the segments before the scan."""
    out, p = [], 2
    while p + 4 <= len(data) and data[p] == 0xFF:
        marker = data[p + 1]
        out.append((p + 1, marker))
        if marker == 0xDA or marker == 0xD9:
            break
        p += 2 + struct.unpack(">H", data[p + 2:p + 4])[0]
    return out


def jpeg_field(draw, data: bytearray, seed: Seed) -> str:
    segments = _jpeg_segments(data) if seed.kind == "jpeg" else []
    if not segments:
        return flip_bits(draw, data, seed)
    sofs = [p for p, m in segments if m in (0xC0, 0xC1, 0xC2)]
    if sofs and draw(st.integers(0, 3)) > 0:
        p = sofs[0] + 3  # length(2) precision(1) height(2) width(2) components(1)
        field = draw(st.sampled_from(("height", "width", "both", "precision", "components", "sampling")))
        v = draw(st.sampled_from(INTERESTING)) & 0xFFFF
        if field in ("height", "both"):
            data[p + 1:p + 3] = struct.pack(">H", v)
        if field in ("width", "both"):
            data[p + 3:p + 5] = struct.pack(">H", v)
        if field == "precision":
            v = draw(st.sampled_from((0, 1, 8, 12, 16, 255)))
            data[p] = v
        if field == "components":
            v = draw(st.sampled_from((0, 1, 2, 3, 4, 255)))
            data[p + 5] = v
        if field == "sampling" and p + 7 < len(data):
            v = draw(st.sampled_from((0x00, 0x11, 0x22, 0x44, 0xFF, 0x0F)))
            data[p + 7] = v
        return f"jpeg SOF {field}={v}"
    p, marker = draw(st.sampled_from(segments))
    v = draw(st.sampled_from(INTERESTING)) & 0xFFFF
    if p + 3 <= len(data):
        data[p + 1:p + 3] = struct.pack(">H", v)
    return f"jpeg segment {marker:#x} length={v}"


_TIFF_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 322, 323, 324, 325, 338, 339, 320)


def _tiff_entries(data: bytearray) -> tuple[str, list[tuple[int, int, int, int]]]:
    """Byte order and (entry offset, tag, type, count) of the first IFD of a classic TIFF."""
    if len(data) < 8 or data[:2] not in (b"II", b"MM") or data[2:4] not in (b"*\x00", b"\x00*"):
        return "<", []
    bo = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(bo + "I", data[4:8])[0]
    if ifd + 2 > len(data):
        return bo, []
    n = struct.unpack(bo + "H", data[ifd:ifd + 2])[0]
    out = []
    for i in range(min(n, 64)):
        e = ifd + 2 + 12 * i
        if e + 12 > len(data):
            break
        tag, typ, count = struct.unpack(bo + "HHI", data[e:e + 8])
        out.append((e, tag, typ, count))
    return bo, out


def tiff_field(draw, data: bytearray, seed: Seed) -> str:
    bo, entries = _tiff_entries(data) if seed.kind == "tiff" else ("<", [])
    if not entries:
        return flip_bits(draw, data, seed)
    what = draw(st.sampled_from(("value", "value", "value", "count", "type", "ifd_offset", "tag")))
    if what == "ifd_offset":
        v = draw(st.sampled_from(INTERESTING) | st.integers(0, len(data) + 16))
        data[4:8] = struct.pack(bo + "I", v % (1 << 32))
        return f"tiff first IFD offset={v}"
    known = [e for e in entries if e[1] in _TIFF_TAGS] or entries
    e, tag, typ, count = draw(st.sampled_from(known))
    if what == "count":
        v = draw(st.sampled_from(INTERESTING))
        data[e + 4:e + 8] = struct.pack(bo + "I", v)
        return f"tiff tag {tag} count={v}"
    if what == "type":
        v = draw(st.integers(0, 18))
        data[e + 2:e + 4] = struct.pack(bo + "H", v)
        return f"tiff tag {tag} type={v}"
    if what == "tag":
        v = draw(st.sampled_from(_TIFF_TAGS + (0, 0xFFFF, 330, 34665)))
        data[e:e + 2] = struct.pack(bo + "H", v)
        return f"tiff tag {tag} -> {v}"
    v = draw(st.sampled_from(INTERESTING))
    if typ == 3 and count <= 2:  # SHORT stored inline
        data[e + 8:e + 10] = struct.pack(bo + "H", v & 0xFFFF)
    else:
        data[e + 8:e + 12] = struct.pack(bo + "I", v)
    return f"tiff tag {tag} value={v}"


_BMP_FIELDS = {"file_size": (2, "I"), "off_bits": (10, "I"), "dib_size": (14, "I"), "width": (18, "i"),
               "height": (22, "i"), "planes": (26, "H"), "bpp": (28, "H"), "compression": (30, "I"),
               "image_size": (34, "I"), "colours": (46, "I")}


def bmp_field(draw, data: bytearray, seed: Seed) -> str:
    if seed.kind != "bmp" or len(data) < 54:
        return flip_bits(draw, data, seed)
    name = draw(st.sampled_from(sorted(_BMP_FIELDS)))
    offset, fmt = _BMP_FIELDS[name]
    if name == "bpp":
        v = draw(st.sampled_from((0, 1, 2, 4, 8, 15, 16, 24, 32, 64, 0xFFFF)))
    elif name == "compression":
        v = draw(st.sampled_from((0, 1, 2, 3, 4, 5, 6, 0xFFFFFFFF)))
    else:
        v = draw(st.sampled_from(INTERESTING))
        if fmt == "i":
            v = struct.unpack("<i", struct.pack("<I", v))[0]
    size = struct.calcsize(fmt)
    data[offset:offset + size] = struct.pack("<" + fmt, v & 0xFFFF if fmt == "H" else v)
    return f"bmp {name}={v}"


_DICOM_TAGS = {  # (group, element) little endian + VR, and the value size
    "rows": (b"\x28\x00\x10\x00US", 2), "columns": (b"\x28\x00\x11\x00US", 2),
    "samples": (b"\x28\x00\x02\x00US", 2), "bits_allocated": (b"\x28\x00\x00\x01US", 2),
    "bits_stored": (b"\x28\x00\x01\x01US", 2), "representation": (b"\x28\x00\x03\x01US", 2),
    "pixel_length": (b"\xe0\x7f\x10\x00OW\x00\x00", 4), "frames": (b"\x28\x00\x08\x00IS", 2),
}


def dicom_field(draw, data: bytearray, seed: Seed) -> str:
    if seed.kind != "dicom":
        return flip_bits(draw, data, seed)
    name = draw(st.sampled_from(sorted(_DICOM_TAGS)))
    tag, size = _DICOM_TAGS[name]
    p = bytes(data).find(tag)
    if p < 0:
        return f"dicom {name} (absent)"
    value_at = p + len(tag) + (2 if size == 2 else 0)
    v = draw(st.sampled_from(INTERESTING))
    if size == 2:
        data[value_at:value_at + 2] = struct.pack("<H", v & 0xFFFF)
    else:
        data[value_at:value_at + 4] = struct.pack("<I", v)
    return f"dicom {name}={v}"


GENERIC = (flip_bits, set_byte, set_int, truncate, delete_range, insert_bytes, duplicate_range, append_garbage)
HEADER = (png_field, jpeg_field, tiff_field, bmp_field, dicom_field)
_WRONG_SUFFIXES = (".png", ".jpg", ".tif", ".bmp", ".dcm", ".txt", "")


@st.composite
def mutated_images(draw, seeds: list[Seed], max_steps: int = 4) -> Case:
    """A seed with 0..max_steps mutations; header edits are chosen as often as byte edits."""
    seed = draw(st.sampled_from(seeds))
    data = bytearray(seed.data)
    steps = []
    for _ in range(draw(st.integers(0, max_steps))):
        op = draw(st.sampled_from(GENERIC + HEADER * 2))
        steps.append(op(draw, data, seed))
    suffix = seed.suffix if draw(st.integers(0, 9)) else draw(st.sampled_from(_WRONG_SUFFIXES))
    return Case(seed.name, suffix, bytes(data), steps)


# ----- project.json

_JSON_LEAF = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from(INTERESTING)
              | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
              | st.sampled_from(("", "..", "../../x", "/etc/passwd", "#zzzzzz", "#00ff00", "new",
                                 "accepted", "in progress", "a/b", "\u0000", "é" * 50)))
JSON_VALUES = st.recursive(_JSON_LEAF, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _paths(obj, prefix=()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _structural(draw, doc) -> str:
    paths = [p for p in _paths(doc) if p]
    if not paths:
        return "structural (nothing)"
    path = draw(st.sampled_from(paths))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    action = draw(st.sampled_from(("replace", "replace", "delete", "duplicate", "wrap", "huge")))
    if action == "delete":
        del parent[key]
    elif action == "duplicate" and isinstance(parent, list):
        parent.append(json.loads(json.dumps(parent[key])))
    elif action == "wrap":
        parent[key] = [parent[key]]
    elif action == "huge":
        parent[key] = draw(st.sampled_from((10**400, -(10**30), 2**63, 1e308, "x" * 100_000, [0] * 50_000)))
    else:
        parent[key] = draw(JSON_VALUES)
    return f"{action} {'/'.join(map(str, path))}"


@st.composite
def mutated_projects(draw, seed_text: str) -> Case:
    """project.json mutated as text (bit flips, truncation, deep nesting) or as a document."""
    kind = draw(st.sampled_from(("structural", "structural", "structural", "bytes", "nesting")))
    if kind == "nesting":
        depth = draw(st.sampled_from((1000, 5000, 100_000)))
        where = draw(st.sampled_from(("classes", "images", "settings", "root")))
        deep = "[" * depth + "]" * depth
        if where == "root":
            text = deep
        else:
            doc = json.loads(seed_text)
            text = json.dumps(doc).replace(f'"{where}": ', f'"{where}": {deep}, "_x": ', 1)
        return Case("project.json", ".json", text.encode(), [f"nesting {depth} at {where}"])
    if kind == "bytes":
        data = bytearray(seed_text.encode())
        steps = [draw(st.sampled_from(GENERIC))(draw, data, None) for _ in range(draw(st.integers(1, 3)))]
        return Case("project.json", ".json", bytes(data), steps)
    doc = json.loads(seed_text)
    steps = [_structural(draw, doc) for _ in range(draw(st.integers(1, 3)))]
    text = json.dumps(doc, allow_nan=True, default=str)
    return Case("project.json", ".json", text.encode(), steps)
