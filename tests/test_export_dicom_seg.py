"""DICOM SEG export from sources that carry only their type 1 attributes (issue 11): what
anonymisers leave behind. Type 2 attributes the SEG copies (Patient's Sex, Study Date...) are
added empty on copies; the source files stay as they were."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from segdesk.cli import main
from segdesk.core.project import Project
from tests.dicom_factory import PATIENT_NAME, minimal_dataset, write

TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
         "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _series(folder: Path, n: int, *, ct: bool, **extra) -> list[Path]:
    uid, study, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for i in range(n):
        pixels = np.full((24, 32), 100 * (i + 1), np.uint16)
        ds = minimal_dataset(pixels, series_uid=uid, study_uid=study, frame_uid=frame,
                             position=(0.0, 0.0, 2.5 * i) if ct else None)
        for keyword, value in extra.items():
            setattr(ds, keyword, value)
        paths.append(write(folder / f"{'ct' if ct else 'sc'}{i}.dcm", ds))
    return paths


def _labelled_project(tmp_path: Path, sources: list[Path]) -> tuple[Project, dict[str, np.ndarray]]:
    """Every image accepted with its own mask (0 = background, 1 = lesion), keyed by SOP Instance UID."""
    project = Project.create(tmp_path / "proj", ["lesion"])
    report = project.add_images(sources)
    assert not report.skipped
    masks = {}
    for k, entry in enumerate(project.images):
        mask = np.zeros(entry.shape, np.uint8)
        mask[2 + k:9 + k, 3:12 + k] = 1
        project.accept(entry.id, mask + 1)
        uid = pydicom.dcmread(project.source_path(entry), stop_before_pixels=True).SOPInstanceUID
        masks[uid] = mask
    return project, masks


def _export(project: Project, out: Path, *extra: str) -> list[Path]:
    assert main(["export", str(project.root), "--format", "dicom-seg", "--out", str(out), *extra]) == 0
    return sorted(out.glob("*.seg.dcm"))


def _check_seg(path: Path, masks: dict[str, np.ndarray]) -> list[str]:
    """The SEG reads back as a SEG with the class as its segment and each referenced source's
    mask as its pixels; returns the referenced SOP Instance UIDs."""
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["lesion"]
    for keyword in TYPE2:  # type 2: present in the SEG, even when the sources lack them
        assert keyword in ds, keyword
    seg = hd.seg.segread(path)
    uids = [ref.ReferencedSOPInstanceUID
            for ref in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    got = seg.get_pixels_by_source_instance(uids, combine_segments=True, ignore_spatial_locations=True)
    np.testing.assert_array_equal(got, np.stack([masks[u] for u in uids]))
    return uids


def test_seg_from_ct_files_with_only_type_1_attributes(tmp_path):
    sources = _series(tmp_path / "in", 3, ct=True)
    before = [p.read_bytes() for p in sources]
    header = pydicom.dcmread(sources[0])
    assert not any(k in header for k in (*TYPE2, "SliceThickness", "SeriesNumber", "InstanceNumber"))
    project, masks = _labelled_project(tmp_path, sources)

    segs = _export(project, tmp_path / "out")

    assert len(segs) == 1
    assert sorted(_check_seg(segs[0], masks)) == sorted(masks)
    seg = pydicom.dcmread(segs[0])
    assert seg.PatientIdentityRemoved == "YES"
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == 2.5  # required in a SEG: the slice spacing stands in
    assert [p.read_bytes() for p in sources] == before  # the sources are never written


def test_seg_from_secondary_captures_without_coordinates(tmp_path):
    """highdicom puts several images in one SEG only by their positions: one SEG per image here."""
    sources = _series(tmp_path / "in", 2, ct=False)
    project, masks = _labelled_project(tmp_path, sources)

    segs = _export(project, tmp_path / "out")

    assert len(segs) == 2
    referenced = [uid for path in segs for uid in _check_seg(path, masks)]
    assert sorted(referenced) == sorted(masks)
    numbers = {(pydicom.dcmread(p).SeriesInstanceUID, pydicom.dcmread(p).InstanceNumber) for p in segs}
    assert len({uid for uid, _ in numbers}) == 1 and {n for _, n in numbers} == {1, 2}


@pytest.mark.parametrize("keep", [False, True], ids=["de-identified", "patient-data-kept"])
def test_patient_data_with_patients_sex_absent(tmp_path, keep):
    """The issue's case: a name and ID, but no Patient's Sex."""
    sources = _series(tmp_path / "in", 2, ct=True, PatientName=PATIENT_NAME, PatientID="PID-1")
    project, masks = _labelled_project(tmp_path, sources)

    segs = _export(project, tmp_path / "out", *(["--keep-patient-data"] if keep else []))

    assert len(segs) == 1
    _check_seg(segs[0], masks)
    seg = pydicom.dcmread(segs[0])
    assert seg.PatientSex in ("", None)
    if keep:
        assert seg.PatientName == PATIENT_NAME and seg.PatientID == "PID-1"
        assert "PatientIdentityRemoved" not in seg
    else:
        assert seg.PatientName in ("", None) and seg.PatientID in ("", None)
        assert seg.PatientIdentityRemoved == "YES"
        assert PATIENT_NAME.encode() not in segs[0].read_bytes()
