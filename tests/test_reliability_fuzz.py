"""Bad input, quick version: a few hundred mutated images, labels and project.json files (see
segdesk/reliability/fuzz.py; the full run is ``python -m segdesk.reliability.fuzz --inputs 10000``),
plus the inputs the full runs found, each as a regression test."""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segdesk.core import imageio, storage
from segdesk.core.image import MAX_FILE_BYTES
from segdesk.core.errors import ImageReadError, LabelError, ProjectError
from segdesk.core.project import PROJECT_FILE, Project
from segdesk.reliability import fuzz
from segdesk.reliability.mutate import _jpeg_segments, _tiff_entries, mutated_images, mutated_projects
from segdesk.reliability.seeds import Seed, image_seeds, label_seed

SEEDS = image_seeds()
LABEL_BYTES, LABEL_SHAPE, LABEL_CLASSES = label_seed()
QUICK = settings(max_examples=160, deadline=None, database=None, derandomize=True,
                 suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def meter():
    m = fuzz.Meter()
    yield m
    tracemalloc.stop()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def project_text(tmp_path_factory) -> str:
    return fuzz.project_seed(tmp_path_factory.mktemp("seed"))


def _ok(outcome: fuzz.Outcome, case) -> None:
    assert outcome.result in (fuzz.LOADED, fuzz.REFUSED), f"{case.describe()}: {outcome.result}: {outcome.detail}"


@QUICK
@given(case=mutated_images(SEEDS))
def test_mutated_images_load_or_are_refused(case, work, meter):
    _ok(fuzz.check_image(case, work, meter, memory_limit_mb=128), case)


@settings(QUICK, max_examples=40)
@given(case=mutated_images([Seed("label", "png", ".png", LABEL_BYTES)]))
def test_mutated_labels_load_or_are_refused(case, work, meter):
    _ok(fuzz.check_label(case, work, meter, LABEL_SHAPE, LABEL_CLASSES, memory_limit_mb=128), case)


@settings(QUICK, max_examples=60)
@given(data=st.data())
def test_mutated_project_files_open_or_are_refused(data, work, meter, project_text):
    case = data.draw(mutated_projects(project_text))
    _ok(fuzz.check_project(case, work, meter), case)


# ----- found by the full runs: each one a regression test


def _peak_mb(fn) -> float:
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    fn()
    return (tracemalloc.get_traced_memory()[1] - start) / 2**20


def _seed(name: str) -> bytes:
    return next(s.data for s in SEEDS if s.name == name)


def test_png_chunk_longer_than_the_file_is_refused_before_allocating(tmp_path, meter):
    """A bit flip made an IDAT length 512 MB in a 96-byte file: OpenCV allocated and zeroed 512 MB."""
    data = bytearray(_seed("png-palette"))
    idat = data.find(b"IDAT") - 4
    data[idat:idat + 4] = struct.pack(">I", 536870930)
    path = tmp_path / "chunk.png"
    path.write_bytes(bytes(data))
    meter.start()
    with pytest.raises(ImageReadError, match="claims 536870930 bytes"):
        imageio.read_image(path)
    assert meter.peak_mb() < 32


def test_png_size_the_data_cannot_hold_is_refused(tmp_path):
    data = bytearray(_seed("png-gray8"))
    data[16:24] = struct.pack(">II", 15000, 15000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # a consistent, believable header
    path = tmp_path / "big.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="too few for 15000 x 15000"):
        imageio.read_image(path)


def test_jpeg_size_the_data_cannot_hold_is_refused(tmp_path, meter):
    """A 1 KB JPEG whose header said 15000 x 15000 decoded to 225 megapixels of grey (430 MB)."""
    data = bytearray(_seed("jpeg-gray"))
    sof = next(p for p, m in _jpeg_segments(data) if m == 0xC0) + 3
    data[sof + 1:sof + 5] = struct.pack(">HH", 15000, 15000)
    path = tmp_path / "big.jpg"
    path.write_bytes(bytes(data))
    meter.start()
    with pytest.raises(ImageReadError, match="too few for 15000 x 15000"):
        imageio.read_image(path)
    assert meter.peak_mb() < 32


def test_tiff_with_absurd_samples_per_pixel_is_refused_quickly(tmp_path, meter):
    """SamplesPerPixel 32769 made tifffile ask for 18 GB and spend a minute decoding."""
    data = bytearray(_seed("tiff-tiled"))
    bo, entries = _tiff_entries(data)
    entry = next(e for e, tag, _t, _c in entries if tag == 277)
    data[entry + 8:entry + 10] = struct.pack(bo + "H", 32769)
    path = tmp_path / "spp.tif"
    path.write_bytes(bytes(data))
    meter.start()
    with pytest.raises(ImageReadError, match="32769 values per pixel"):
        imageio.read_image(path)
    assert meter.peak_mb() < 32


def test_damaged_dicom_length_does_not_allocate_gigabytes(tmp_path, meter):
    """A damaged element length made pydicom read (and Python allocate) gigabytes for a 2 KB file."""
    dicom = next((s.data for s in SEEDS if s.kind == "dicom"), None)
    if dicom is None:
        pytest.skip("pydicom is not installed")
    data = bytearray(dicom)
    tag = data.find(b"\x28\x00\x10\x00US")  # Rows: give it a 4 GB length as an OB element
    data[tag + 4:tag + 8] = b"OB\x00\x00"
    data[tag + 8:tag + 8] = struct.pack("<I", 0xFFFFFFF0)
    path = tmp_path / "bad.dcm"
    path.write_bytes(bytes(data))
    meter.start()
    with pytest.raises(ImageReadError):
        imageio.read_image(path)
    assert meter.peak_mb() < 64


def test_label_png_with_huge_header_is_refused_before_decoding(tmp_path, meter):
    data = bytearray(LABEL_BYTES)
    data[16:24] = struct.pack(">II", 20000, 20000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path = tmp_path / "label.png"
    path.write_bytes(bytes(data))
    meter.start()
    with pytest.raises(LabelError, match="not a readable PNG"):  # its data cannot hold 20000 x 20000
        storage.read_label(path, LABEL_SHAPE, LABEL_CLASSES)
    assert meter.peak_mb() < 16


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(images=[{**d["images"][0], "id": "../../outside"}]), "ids are plain file names"),
    (lambda d: d["images"][0].update(height=10**400), "not a possible image size"),
    (lambda d: d["images"][0].update(width=True), "not a possible image size"),
    (lambda d: d["images"].append(dict(d["images"][0])), "listed twice"),
    (lambda d: d["classes"][0].update(name=5), "a class needs a short non-empty name"),
    (lambda d: d.update(name=["x"]), "not text"),
    (lambda d: d["images"][0].update(seconds_spent=float("nan")), "not a duration"),
    (lambda d: d["images"][0].update(source=None), "not a file path"),
    (lambda d: d.update(settings=[1, 2]), "'settings' is not an object"),
])
def test_damaged_project_fields_are_refused_with_the_field_named(tmp_path, project_text, edit, words):
    doc = json.loads(project_text)
    edit(doc)
    (tmp_path / PROJECT_FILE).write_text(json.dumps(doc))
    with pytest.raises(ProjectError, match=words):
        Project.open(tmp_path, clean=False)


def test_deeply_nested_project_file_is_refused(tmp_path):
    (tmp_path / PROJECT_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ProjectError, match="not valid JSON"):
        Project.open(tmp_path, clean=False)


def test_bad_known_settings_are_dropped_not_fatal(tmp_path, project_text):
    doc = json.loads(project_text)
    doc["settings"].update(auto_train_after="", working_scale=7)
    (tmp_path / PROJECT_FILE).write_text(json.dumps(doc))
    project = Project.open(tmp_path, clean=False)
    assert "auto_train_after" not in project.settings and "working_scale" not in project.settings
    assert np.all([e.shape[0] > 0 for e in project.images])


def test_file_size_limits_refuse_before_reading(tmp_path, meter):
    """Sparse files: the size is real to the reader, the disk holds almost nothing."""
    from segdesk.core.project_schema import MAX_PROJECT_BYTES

    image = tmp_path / "huge.png"
    with open(image, "wb") as f:
        f.write(_seed("png-gray8"))
        f.truncate(MAX_FILE_BYTES + 1)
    meter.start()
    with pytest.raises(ImageReadError, match="over the 2 GB limit"):
        imageio.read_image(image)
    with open(tmp_path / PROJECT_FILE, "wb") as f:
        f.write(b'{"schema": 1, "classes": [], "images": [')
        f.truncate(MAX_PROJECT_BYTES + 1)
    with pytest.raises(ProjectError, match="too large"):
        Project.open(tmp_path, clean=False)
    assert meter.peak_mb() < 16
