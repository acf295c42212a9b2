"""DICOM Segmentation export (highdicom): one SEG object per series of labelled DICOM images.

The SEG references its source images by their UIDs (so 3D Slicer, OHIF and PACS viewers put it on
them), carries one segment per class with the class name and colour (CIELab recommended display
value), and is a BINARY segmentation, the type every SEG reader supports. Slices of a series are
referenced only where they hold a label of the exported statuses; a multi-frame source is
referenced whole (frames without a label are empty). Sources may lack type 2 attributes (often
the case after anonymisation): highdicom gets copies with them present and empty (Slice Thickness,
which a SEG must fill, taken from the slice spacing).

Patient data: unless ``keep_patient_data`` is given, the patient and study attributes highdicom
copies from the sources are emptied or removed first (PS3.15 basic profile, UIDs retained) and
the SEG says so (Patient Identity Removed = YES). The file is named by series number and a hash
of the Series Instance UID, never by the source file names.
"""

from __future__ import annotations

import copy
import logging
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from segdesk import __version__
from segdesk.core import deid, encoding, storage
from segdesk.core.dicom_series import Series, normal
from segdesk.core.export_series import ExportReport, collect, series_shape

log = logging.getLogger(__name__)
# highdicom logs the UIDs of the datasets it copies from at INFO: UIDs link back to the patient.
logging.getLogger("highdicom").setLevel(logging.WARNING)

SEG_SERIES_NUMBER = 9000  # a high number keeps derived series after the acquired ones
# Type 2 attributes highdicom reads from a source image (Patient and General Study modules).
# Type 2 means "present, perhaps empty", yet anonymised files often leave them out.
_TYPE2_FROM_SOURCE = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                      "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
_SOURCE_GEOMETRY = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


def _segments(classes) -> list[hd.seg.SegmentDescription]:
    algorithm = hd.AlgorithmIdentificationSequence(
        name="segdesk", family=codes.cid7162.ArtificialIntelligence, version=__version__)
    return [
        hd.seg.SegmentDescription(
            segment_number=encoding.class_number(i),
            segment_label=c.name[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            # a model proposed, a person corrected and accepted
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*c.rgb),
        )
        for i, c in enumerate(classes)
    ]


def _source(header: Dataset, keep_patient_data: bool, thickness: float | None = None) -> Dataset:
    """A copy of a source header for highdicom (the header itself is left alone): absent type 2
    attributes added empty, as the standard allows, Slice Thickness set to ``thickness`` where it
    has no value, and patient data scrubbed unless kept."""
    ds = copy.deepcopy(header)
    for keyword in _TYPE2_FROM_SOURCE:
        if keyword not in ds:
            setattr(ds, keyword, None)  # an element with no value
    if ds.get("SliceThickness") in (None, ""):  # type 2 in the source, read by highdicom regardless
        ds.SliceThickness = f"{thickness:.6g}" if thickness is not None else None
    if not keep_patient_data:
        deid.scrub(ds)
    return ds


def _slice_spacing(series: Series) -> float | None:
    """The distance between neighbouring slices along the normal (mm); None without two positions."""
    slices = [sl for sl in series.slices if sl.position is not None and sl.orientation is not None]
    if len(slices) < 2:
        return None
    along = np.sort([float(np.dot(sl.position, normal(slices[0].orientation))) for sl in slices])
    steps = np.diff(along)
    steps = steps[steps > 1e-3]
    return float(steps.min()) if steps.size else None


def _series_segs(series: Series, masks: dict, classes, number: int, keep_patient_data: bool,
                 notes: list[str]):
    """([SEG dataset, ...], None) or ([], reason): the SEGs of one series, in one SEG series."""
    shape = series_shape(series)
    if shape is None:
        return [], "its images differ in size; a DICOM SEG needs one size per series"
    if any(sl.frame is not None for sl in series.slices):
        groups, reason = _multiframe_group(series, masks, shape, keep_patient_data)
    else:
        groups, reason = _slice_groups(series, masks, keep_patient_data, notes), None
    if reason:
        return [], reason
    series_uid = hd.UID()
    return [_seg(sources, pixel, classes, series_uid, number, instance, keep_patient_data)
            for instance, (sources, pixel) in enumerate(groups, start=1)], None


def _multiframe_group(series: Series, masks: dict, shape, keep_patient_data: bool):
    """([(sources, pixel)], None) for a multi-frame file referenced whole, or ([], reason)."""
    if len({sl.path for sl in series.slices}) != 1:
        return [], "it mixes several multi-frame files"
    header = series.slices[0].header
    if not all(g in header for g in _SOURCE_GEOMETRY):
        return [], ("its multi-frame file has no per-frame geometry (functional groups), which a "
                    "DICOM SEG needs; export it with --format nifti or png")
    frames = sorted(series.slices, key=lambda sl: sl.frame)
    pixel = np.zeros((len(frames), *shape), np.uint8)
    for i, sl in enumerate(frames):
        if sl.key.id in masks:
            pixel[i] = masks[sl.key.id]
    return [([_source(header, keep_patient_data)], pixel)], None


def _slice_groups(series: Series, masks: dict, keep_patient_data: bool, notes: list[str]) -> list:
    """[(sources, pixel)] for the labelled slices: one group, or one per slice for images without
    patient coordinates (secondary captures, say), which highdicom cannot place side by side.

    A SEG with a frame of reference needs a Slice Thickness (CP 1426); sources without one get the
    spacing between the series' slices, the depth each SEG frame stands for."""
    chosen = [sl for sl in series.slices if sl.key.id in masks]
    thickness = None
    if any(sl.header.get("SliceThickness") in (None, "") for sl in chosen):
        thickness = _slice_spacing(series)
        if thickness is None and "FrameOfReferenceUID" in chosen[0].header:
            notes.append(f"{series.key}: its images give no Slice Thickness, nor two slice positions "
                         "to take it from; the DICOM SEG goes without one")
    sources = [_source(sl.header, keep_patient_data, thickness) for sl in chosen]
    pixels = [masks[sl.key.id] for sl in chosen]
    if hd.spatial.get_image_coordinate_system(sources[0]) is None:
        return [([src], p[None]) for src, p in zip(sources, pixels)]
    return [(sources, np.stack(pixels))]


def _seg(sources, pixel, classes, series_uid, number, instance, keep_patient_data) -> Dataset:
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segments(classes),
        series_instance_uid=series_uid,
        series_number=number,
        sop_instance_uid=hd.UID(),
        instance_number=instance,
        manufacturer="segdesk",
        manufacturer_model_name="segdesk",
        software_versions=__version__,
        device_serial_number="segdesk",
        content_label="SEGDESK",
        content_description="segdesk labels",
        series_description="segdesk labels",
    )
    if not keep_patient_data:
        deid.scrub(seg)
        deid.mark_deidentified(seg)
    return seg


def export_dicom_seg(project, out_dir: Path, statuses: set[str],
                     keep_patient_data: bool = False) -> ExportReport:
    """Write '<series key>.seg.dcm' for each DICOM series with labels ('<series key>-<n>.seg.dcm',
    one per labelled image, for a series without patient coordinates); other images are skipped."""
    found = collect(project, statuses)
    report = found.report
    for entry in found.others:
        report.skipped.append((entry.id, "not a DICOM image: a DICOM SEG needs DICOM sources "
                                         "(use --format png or nifti)"))
    for n, series in enumerate(found.series):
        try:
            segs, reason = _series_segs(series, found.masks, project.classes, SEG_SERIES_NUMBER + n,
                                        keep_patient_data, report.notes)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # highdicom refusing the sources
            log.debug("DICOM SEG for %s failed", series.key, exc_info=True)
            segs, reason = [], f"highdicom could not build a DICOM SEG from it ({exc})"
        if not segs:
            report.skipped.append((series.key, reason))
            continue
        for i, seg in enumerate(segs, start=1):
            name = f"{series.key}-{i:03d}" if len(segs) > 1 else series.key
            path = Path(out_dir) / f"{name}.seg.dcm"
            storage.atomic_write_bytes(path, _encode(seg))
            report.written.append(path)
    return report


def _encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
