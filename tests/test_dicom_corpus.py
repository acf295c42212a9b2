"""Real DICOM files: the test corpus the installed pydicom carries (pydicom/data/test_files, files
from many writers and decoders). What pydicom decodes, segdesk reads with the same pixels; the
rest segdesk refuses with a typed error that names the true reason. Nothing is downloaded: only
the files on disk count, and files over MAX_BYTES are skipped to keep the walk quick (pydicom
3.0 carries none that large)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import DeflatedExplicitVRLittleEndian

from segdesk.cli import main
from segdesk.core import dicom, dicom_series, imageio
from segdesk.core.errors import ImageReadError, SegdeskError
from segdesk.core.project import Project
from tests.dicom_factory import ct_phantom, dataset, write

CORPUS = Path(pydicom.data.__file__).parent / "test_files"
MAX_BYTES = 4 * 1024**2
FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and not p.name.endswith(".py")
               and "__pycache__" not in p.parts)
# Each refusal says one of these (the true reasons, in segdesk's words).
REASONS = ("without an image", "incomplete or damaged", "has no valid", "no decoder",
           "which segdesk cannot decode", "not a PNG, JPEG, BMP, TIFF or DICOM image",
           "is not supported", "is not a 2D gray or RGB image")
# Files whose reason does not depend on which decoders are installed.
KNOWN = {
    "rtplan.dcm": "without an image (RT Plan Storage)",
    "MR_truncated.dcm": "incomplete or damaged",
    "badVR.dcm": "no valid Number of Frames",
    "nested_priv_SQ.dcm": "Bits Allocated",
    "meta_missing_tsyntax.dcm": "no valid Rows",
    "README.txt": "not a PNG, JPEG",
}


def _pydicom_frames(path: Path) -> tuple[pydicom.Dataset, np.ndarray] | None:
    """pydicom's own decoding as frames (N x H x W [x 3]); None when pydicom cannot decode it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            arr = ds.pixel_array
    except Exception:  # noqa: BLE001 - any failure of pydicom's is "pydicom cannot decode it"
        return None
    n = int(ds.get("NumberOfFrames") or 1)
    return ds, arr if n > 1 else arr[None]


def _is_image(frames: np.ndarray) -> bool:
    return frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)


def _decodable() -> list[tuple[Path, int]]:
    """(file, frames) of every corpus file pydicom decodes to 2D or RGB images."""
    out = []
    for path in FILES:
        decoded = _pydicom_frames(path) if path.stat().st_size <= MAX_BYTES else None
        if decoded is not None and _is_image(decoded[1]):
            out.append((path, len(decoded[1])))
    return out


def test_the_corpus_is_there():
    assert len(FILES) > 100, f"pydicom's test files not found under {CORPUS}"
    assert len(_decodable()) > 50


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_file(path):
    if path.stat().st_size > MAX_BYTES:
        pytest.skip(f"over {MAX_BYTES} bytes")
    decoded = _pydicom_frames(path)
    if decoded is None:
        with pytest.raises(SegdeskError) as err:
            imageio.read_image(path)
        message = str(err.value)
        assert any(reason in message for reason in REASONS), message
        if path.name in KNOWN:
            assert KNOWN[path.name] in message
        return
    ds, frames = decoded
    if not _is_image(frames):  # not a 2D or RGB picture: refused with a reason, or read
        try:
            imageio.read_image(path)
        except SegdeskError:
            pass
        return
    palette = str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR"
    for i, expected in enumerate(frames):
        img = imageio.read_image(path, frame=i if len(frames) > 1 else None)
        if palette:  # segdesk shows the colours the lookup table gives
            assert img.pixels.shape == (*expected.shape, 3)
        elif expected.ndim == 3:
            np.testing.assert_array_equal(img.pixels, expected)
        else:
            np.testing.assert_allclose(img.pixels, apply_modality_lut(expected, ds), rtol=1e-6)


def test_every_decodable_corpus_file_is_added(tmp_path):
    """Adding the whole corpus folder adds every frame of every file pydicom decodes, and only those."""
    project = Project.create(tmp_path / "proj", ["a"])
    report = project.add_images([CORPUS])
    expected = {(hashlib.sha256(path.read_bytes()).hexdigest(), frame)
                for path, n in _decodable() for frame in (range(n) if n > 1 else [None])}
    assert {(e.sha256, e.frame) for e in project.images} == expected
    for _, reason in report.skipped:
        assert any(r in reason for r in REASONS + ("already in the project",)), reason


def test_segdesk_add_takes_jpeg_baseline_and_deflated_files(tmp_path):
    """The files of issue 11: JPEG Baseline with an implicit-VR Pixel Data element, and a
    Deflated Explicit VR data set."""
    files = [CORPUS / "SC_rgb_jpeg.dcm", CORPUS / "image_dfl.dcm"]
    if not all(f.exists() for f in files):
        pytest.skip("this pydicom carries other test files")
    root = tmp_path / "proj"
    Project.create(root, ["a"])
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert main(["add", str(root), *map(str, files)]) == 0
    shapes = sorted(e.shape for e in Project.open(root).images)
    assert shapes == [(256, 256), (512, 512)]
    # pydicom's "Expected explicit VR, but found implicit VR" does not reach the user's terminal
    assert not [w for w in shown if "VR" in str(w.message)]


def test_a_file_pydicom_complains_about_reads_quietly_in_the_training_process():
    """The training process (segdesk.ml.train_process) reads the project's DICOM files with its stderr
    on the user's terminal: after quiet_pydicom, pydicom's warning is neither printed nor logged."""
    path = CORPUS / "SC_rgb_jpeg.dcm"
    if not path.exists():
        pytest.skip("this pydicom carries other test files")
    script = ("import logging, sys; logging.basicConfig(level=logging.WARNING, stream=sys.stderr)\n"
              "from segdesk.core.third_party import quiet_pydicom; quiet_pydicom()\n"
              f"from segdesk.core import imageio; print(imageio.read_image({str(path)!r}).pixels.shape)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "(256, 256, 3)"
    assert result.stderr == ""


# ----- refusals that name their reason


def test_missing_decoder_names_the_pip_packages(monkeypatch):
    path = CORPUS / "JPEG2000.dcm"
    if not path.exists():
        pytest.skip("this pydicom carries other test files")
    missing = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0",
               "gdcm - requires gdcm>=3.0.10", "pillow - requires pillow, numpy"]
    monkeypatch.setattr(dicom, "get_decoder",
                        lambda ts: SimpleNamespace(is_available=False, missing_dependencies=missing))
    with pytest.raises(ImageReadError) as err:
        imageio.read_image(path)
    message = str(err.value)
    assert "JPEG 2000" in message and "no decoder" in message
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in message
    assert "pip install python-gdcm" in message
    assert "pip install pillow numpy" in message


def test_deflated_data_set_that_inflates_past_the_limit_is_refused(tmp_path, monkeypatch):
    ds = dataset(np.zeros((512, 512), np.uint16))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = write(tmp_path / "deflated.dcm", ds)
    assert path.stat().st_size < 10_000  # half a megabyte of zeros deflates to little
    assert imageio.read_image(path).pixels.shape == (512, 512)
    monkeypatch.setattr(dicom, "MAX_FILE_BYTES", 100_000)
    with pytest.raises(ImageReadError, match="inflates to more than"):
        imageio.read_image(path)


def test_data_set_without_preamble_or_meta_is_sniffed_as_dicom(tmp_path):
    """No 'DICM', no suffix: some old writers. The first element tells it is DICOM."""
    hu = ct_phantom()
    ds = dataset(hu)
    del ds.file_meta
    path = tmp_path / "in" / "IM0002"
    path.parent.mkdir()
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert path.read_bytes()[:2] == b"\x08\x00"
    np.testing.assert_array_equal(imageio.read_image(path).pixels, hu)
    assert dicom_series.looks_like_dicom(path)
    project = Project.create(tmp_path / "proj", ["a"])
    assert len(project.add_images([path.parent]).added) == 1
