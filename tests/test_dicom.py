"""DICOM: reading (rescale, photometric, frames, colour, compression), display windows, series,
exports (DICOM SEG, NIfTI) and keeping patient identifiers out of everything segdesk writes."""

from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, MPEG2MPML, RLELossless,
                         BasicTextSRStorage, generate_uid)

from segdesk.cli import main
from segdesk.core import display, imageio
from segdesk.core.dicom import DicomImage
from segdesk.core.errors import ImageReadError
from segdesk.core.project import Project
from tests.dicom_factory import IDENTIFIERS, PATIENT_NAME, ct_file, ct_phantom, dataset, write


def _rng_pixels(dtype, shape=(32, 40), low=0, high=4096, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, shape).astype(dtype)


# ----- reading


def test_ct_rescale_gives_exact_hounsfield_units_and_the_file_window(tmp_path):
    hu = ct_phantom()
    path = ct_file(tmp_path / "ct.dcm", hu)
    img = imageio.read_image(path)
    assert isinstance(img, DicomImage)
    assert img.pixels.dtype == np.int16  # whole-number slope/intercept: exact integers, 16 bits
    np.testing.assert_array_equal(img.pixels, hu.clip(-1024, 3071))
    assert (img.modality, img.instance_number, img.frame) == ("CT", 1, None)
    assert display.default_window(img) == (-160.0, 240.0)  # first window: 40/400
    names = [name for name, _ in display.presets(img)]
    assert names[:2] == ["File: window 1 (40/400)", "File: window 2 (-600/1500)"]
    assert dict(display.presets(img))["CT lung (-600/1500)"] == (-1350.0, 150.0)
    assert "CT" in display.describe(img) and "instance 1" in display.describe(img)


def test_rescale_dtypes(tmp_path):
    stored = _rng_pixels(np.uint16)
    ds = dataset(stored, bits_stored=12, slope=0.5, intercept=-10.25)
    img = imageio.read_image(write(tmp_path / "float.dcm", ds))
    assert img.pixels.dtype == np.float32
    np.testing.assert_allclose(img.pixels, stored * 0.5 - 10.25)

    wide = _rng_pixels(np.uint16, high=60000)
    wide[0, 0] = 59999
    img = imageio.read_image(write(tmp_path / "wide.dcm", dataset(wide, slope=1, intercept=-1024)))
    assert img.pixels.dtype == np.int32  # neither int16 nor uint16 holds -1024..58975
    np.testing.assert_array_equal(img.pixels, wide.astype(np.int32) - 1024)


def test_signed_16_bit_without_rescale(tmp_path):
    values = _rng_pixels(np.int16, low=-2000, high=2000)
    img = imageio.read_image(write(tmp_path / "s.dcm", dataset(values)))
    assert img.pixels.dtype == np.int16
    np.testing.assert_array_equal(img.pixels, values)
    assert display.default_window(img) == display.auto_window(values)  # no window in the file


def test_monochrome1_is_inverted_on_screen_only(tmp_path):
    stored = _rng_pixels(np.uint16)
    img = imageio.read_image(write(tmp_path / "m1.dcm", dataset(stored, photometric="MONOCHROME1",
                                                               bits_stored=12, modality="CR")))
    assert img.invert
    np.testing.assert_array_equal(img.pixels, stored)  # stored values as in the file
    window = display.default_window(img)
    np.testing.assert_array_equal(display.render(img, window), 255 - display.to_display(stored, window))


def test_voi_lut_is_used_for_display(tmp_path):
    stored = _rng_pixels(np.uint16, high=256)
    ds = dataset(stored, bits_stored=8 + 4, modality="DX")
    table = np.rint(np.sqrt(np.arange(256) / 255.0) * 4095).astype(np.uint16)
    item = Dataset()
    item.add_new(0x00283002, "US", [256, 0, 12])  # LUT Descriptor: entries, first value, bits
    item.add_new(0x00283006, "US", table.tolist())  # LUT Data
    ds.VOILUTSequence = [item]
    img = imageio.read_image(write(tmp_path / "voi.dcm", ds))
    window = display.default_window(img)
    assert window == (0.0, 255.0)
    expected = np.rint(table[stored] / 4095 * 255).astype(np.uint8)
    np.testing.assert_array_equal(display.render(img, window)[..., 0], expected)
    assert display.VOI_LUT in dict(display.presets(img))


def test_multi_frame_file_is_one_image_per_frame(tmp_path):
    frames = np.stack([ct_phantom(seed=i) for i in range(3)])
    path = write(tmp_path / "in" / "cine.dcm", dataset(frames, n_frames=3, position=None))
    img = imageio.read_image(path, frame=2)
    np.testing.assert_array_equal(img.pixels, frames[2])
    assert (img.frame, img.n_frames) == (2, 3)
    with pytest.raises(ImageReadError, match="frame 4 does not exist"):
        imageio.read_image(path, frame=3)

    project = Project.create(tmp_path / "proj", ["lesion"])
    added = project.add_images([tmp_path / "in"]).added
    assert [e.frame for e in added] == [0, 1, 2]
    assert len({e.id for e in added}) == 3 and all(e.id.startswith("dcm-") for e in added)
    reopened = Project.open(project.root)
    np.testing.assert_array_equal(reopened.read_image(reopened.images[1]).pixels, frames[1])
    assert project.add_images([path]).added == []  # the same frames are not added twice


def test_old_project_json_without_frame_still_opens(tmp_path):
    project = Project.create(tmp_path / "proj", ["lesion"])
    cv_path = tmp_path / "a.tif"
    import tifffile

    tifffile.imwrite(cv_path, _rng_pixels(np.uint16))
    project.add_images([cv_path])
    data = json.loads((project.root / "project.json").read_text())
    for e in data["images"]:
        del e["frame"]
    (project.root / "project.json").write_text(json.dumps(data))
    assert Project.open(project.root).images[0].frame is None


def test_rgb_and_ybr_colour(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (24, 32, 3)).astype(np.uint8)
    img = imageio.read_image(write(tmp_path / "rgb.dcm", dataset(rgb, photometric="RGB", modality="XC")))
    np.testing.assert_array_equal(img.pixels, rgb)
    assert display.default_window(img) is None  # 8-bit colour: no windowing
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    img = imageio.read_image(write(tmp_path / "ybr.dcm", dataset(ybr, photometric="YBR_FULL", modality="XC")))
    assert img.pixels.shape == rgb.shape
    assert np.abs(img.pixels.astype(int) - rgb).max() <= 3  # YBR -> RGB rounding


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda s: s.name)
def test_compressed_transfer_syntaxes_decode(tmp_path, syntax):
    hu = ct_phantom(seed=5)
    ds = dataset(hu)
    try:
        ds.compress(syntax)
    except (RuntimeError, NotImplementedError) as exc:  # no encoder installed here
        pytest.skip(f"cannot encode {syntax.name}: {exc}")
    img = imageio.read_image(write(tmp_path / "c.dcm", ds))
    assert img.transfer_syntax == syntax
    np.testing.assert_array_equal(img.pixels, hu)


def test_jpeg_baseline_ybr_comes_back_as_rgb(tmp_path):
    import cv2

    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, np.full_like(xx, 128)], -1).astype(np.uint8)
    ds = dataset(rgb, photometric="RGB", modality="XC")
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PhotometricInterpretation = "YBR_FULL_422"  # what JPEG baseline colour is declared as
    ds.PixelData = encapsulate([jpeg.tobytes()])
    ds["PixelData"].VR = "OB"
    img = imageio.read_image(write(tmp_path / "photo.dcm", ds))
    assert img.pixels.shape == rgb.shape
    assert np.abs(img.pixels.astype(int) - rgb).mean() < 2  # lossy, but RGB (not YBR) and not swapped


def test_undecodable_syntax_names_it(tmp_path):
    ds = dataset(ct_phantom())
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    with pytest.raises(ImageReadError, match=r"MPEG2 Main Profile.*1\.2\.840\.10008\.1\.2\.4\.100"):
        imageio.read_image(write(tmp_path / "video.dcm", ds))


def test_broken_and_non_image_dicom_give_typed_errors(tmp_path):
    good = ct_file(tmp_path / "ct.dcm")
    data = good.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 2000])
    with pytest.raises(ImageReadError, match="incomplete"):
        imageio.read_image(tmp_path / "cut.dcm")
    report = Dataset()
    report.SOPClassUID, report.SOPInstanceUID = BasicTextSRStorage, generate_uid()
    report.PatientName, report.Modality = PATIENT_NAME, "SR"
    report.file_meta = pydicom.dataset.FileMetaDataset()
    report.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    write(tmp_path / "sr.dcm", report)
    with pytest.raises(ImageReadError, match="without an image") as err:
        imageio.read_image(tmp_path / "sr.dcm")
    assert "DOE" not in str(err.value)
    no_pixels = dataset(ct_phantom())
    del no_pixels.PixelData
    with pytest.raises(ImageReadError, match="without an image"):
        imageio.read_image(write(tmp_path / "header-only.dcm", no_pixels))
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all" * 10)
    with pytest.raises(ImageReadError):
        imageio.read_image(tmp_path / "junk.dcm")


def test_dispatch_by_magic_and_suffix(tmp_path):
    hu = ct_phantom()
    bare = write(tmp_path / "bare.dcm", dataset(hu), preamble=False)  # no 'DICM' at 128: by suffix
    assert bare.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(imageio.read_image(bare).pixels, hu)
    plain = write(tmp_path / "IM000001", dataset(hu))  # no suffix: by magic
    np.testing.assert_array_equal(imageio.read_image(plain).pixels, hu)
    assert imageio.read_image_size(plain) == hu.shape


def test_folder_groups_series_and_orders_slices(tmp_path):
    folder = tmp_path / "in"
    hu = ct_phantom()
    a, b = generate_uid(), generate_uid()
    # file names in the opposite order to the instance numbers, the two series interleaved
    for i, inst in enumerate((3, 1, 2)):
        ct_file(folder / f"x{i}a", hu, series_uid=a, instance=inst, position=(0, 0, inst * 2.0))
        ct_file(folder / f"x{i}b.dcm", hu, series_uid=b, instance=inst, position=(0, 0, inst * 2.0))
    (folder / "notes.txt").write_text("not an image")
    project = Project.create(tmp_path / "proj", ["lesion"])
    report = project.add_images([folder])
    assert report.skipped == []
    sources = [Path(e.source).name for e in report.added]
    assert sources == ["x1a", "x2a", "x0a", "x1b.dcm", "x2b.dcm", "x0b.dcm"]


# ----- display speed


def test_render_of_a_large_16_bit_image_is_fast():
    pixels = np.random.default_rng(0).integers(-1024, 3000, (2048, 2048)).astype(np.int16)
    img = DicomImage(pixels=pixels, path="x", invert=True)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        display.render(img, (-160.0, 240.0))
        best = min(best, time.perf_counter() - start)
    assert best < 0.05, f"render took {best * 1000:.0f} ms"


# ----- exports and patient data


@pytest.fixture
def labelled_series(tmp_path):
    """A project with a 3-slice CT series (plus a PNG), every image accepted with a known mask."""
    folder = tmp_path / "scans"
    hu = ct_phantom()
    uid, study = generate_uid(), generate_uid()
    for inst in (1, 2, 3):
        ct_file(folder / f"slice{inst}.dcm", hu, series_uid=uid, study_uid=study, instance=inst,
                position=(-20.0, -30.0, 2.0 * (inst - 1)))
    import cv2

    cv2.imwrite(str(folder / "photo.png"), np.full((16, 20), 90, np.uint8))
    project = Project.create(tmp_path / "proj", ["lesion", "organ"])
    project.add_images([folder])
    masks = {}
    for k, entry in enumerate(project.images):
        mask = np.zeros(entry.shape, np.uint8)
        mask[2 + k: 8 + k, 3:9] = 1
        mask[10:14, 10 + k: 15] = 2
        project.accept(entry.id, mask + 1)
        masks[entry.id] = mask
    return project, masks


def _leaks(text: str) -> list[str]:
    return [s for s in IDENTIFIERS if s.lower() in text.lower()]


def test_exports_read_back_and_carry_no_identifiers(labelled_series, tmp_path, caplog, capsys):
    import highdicom as hd
    import nibabel as nib

    project, masks = labelled_series
    caplog.set_level(logging.DEBUG)
    outs = {}
    for fmt in ("png", "dicom-seg", "nifti"):
        outs[fmt] = tmp_path / f"out-{fmt}"
        code = main(["-v", "export", str(project.root), "--format", fmt, "--out", str(outs[fmt])])
        assert code == (1 if fmt == "dicom-seg" else 0)  # a DICOM SEG skips the PNG: exit 1 says so
    printed = capsys.readouterr()

    dicom_entries = [e for e in project.images if e.id.startswith("dcm-")]
    seg_files = list(outs["dicom-seg"].glob("*.seg.dcm"))
    assert len(seg_files) == 1
    seg = hd.seg.segread(seg_files[0])
    uids = [pydicom.dcmread(project.source_path(e), stop_before_pixels=True).SOPInstanceUID
            for e in dicom_entries]
    got = seg.get_pixels_by_source_instance(uids, combine_segments=True, ignore_spatial_locations=True)
    np.testing.assert_array_equal(got, np.stack([masks[e.id] for e in dicom_entries]))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lesion", "organ"]
    lab = seg.SegmentSequence[0].RecommendedDisplayCIELabValue
    assert hd.color.CIELabColor.from_dicom_value(lab).to_rgb() == pytest.approx(project.classes[0].rgb, abs=2)
    assert seg.PatientName == "" and seg.PatientIdentityRemoved == "YES"
    assert "photo" in printed.err  # the PNG has no DICOM SEG, and says why

    volume = nib.load(next(outs["nifti"].glob("series-*.nii.gz")))
    data = np.asarray(volume.dataobj)
    assert data.shape == (64, 64, 3)
    for k, e in enumerate(dicom_entries):
        np.testing.assert_array_equal(data[:, :, k].T, masks[e.id])
    np.testing.assert_allclose(volume.affine @ [0, 0, 0, 1], [20, 30, 0, 1])  # LPS (-20,-30,0) in RAS
    np.testing.assert_allclose(volume.affine @ [1, 0, 0, 1], [20 - 0.8, 30, 0, 1])  # column spacing
    np.testing.assert_allclose(volume.affine @ [0, 1, 2, 1], [20, 30 - 0.7, 4, 1])
    photo = [e for e in project.images if not e.id.startswith("dcm-")][0]
    np.testing.assert_array_equal(np.asarray(nib.load(outs["nifti"] / "photo.nii.gz").dataobj)[:, :, 0].T,
                                  masks[photo.id])

    written = [p for p in project.root.rglob("*") if p.is_file()]
    written += [p for out in outs.values() for p in out.iterdir()]
    for path in written:
        assert not _leaks(path.name), path
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        if path.suffix in (".json", ".jsonl", ".dcm", ".gz"):
            assert not _leaks(data.decode("latin-1")), path
    assert not _leaks(caplog.text)
    assert not _leaks(printed.out + printed.err)


def test_patient_data_kept_only_when_asked(labelled_series, tmp_path):
    project, _ = labelled_series
    out = tmp_path / "keep"
    assert main(["export", str(project.root), "--format", "dicom-seg", "--out", str(out),
                 "--keep-patient-data"]) == 1  # the PNG is skipped
    seg = pydicom.dcmread(next(out.glob("*.seg.dcm")))
    assert seg.PatientName == PATIENT_NAME
    assert "PatientIdentityRemoved" not in seg


def test_multi_frame_without_geometry_skips_seg_but_exports_nifti(tmp_path):
    import nibabel as nib

    frames = np.stack([ct_phantom(seed=i) for i in range(2)])
    write(tmp_path / "in" / "cine.dcm", dataset(frames, n_frames=2, position=None))
    project = Project.create(tmp_path / "proj", ["lesion"])
    project.add_images([tmp_path / "in"])
    mask = np.ones(frames.shape[1:], np.uint8)
    mask[5:9, 5:9] = 2
    project.accept(project.images[1].id, mask)
    assert main(["export", str(project.root), "--format", "dicom-seg", "--out", str(tmp_path / "s")]) == 1
    assert list((tmp_path / "s").glob("*.dcm")) == []
    assert main(["export", str(project.root), "--format", "nifti", "--out", str(tmp_path / "n")]) == 0
    data = np.asarray(nib.load(next((tmp_path / "n").glob("*.nii.gz"))).dataobj)
    assert data.shape == (64, 64, 2) and data[:, :, 0].max() == 0
    np.testing.assert_array_equal(data[:, :, 1].T, mask - 1)
