"""DICOM Segmentation export (highdicom): one SEG object per series of labelled DICOM images.

The SEG references its source images by their UIDs (so 3D Slicer, OHIF and PACS viewers put it on
them), carries one segment per class with the class name and colour (CIELab recommended display
value), and is a BINARY segmentation, the type every SEG reader supports. Slices of a series are
referenced only where they hold a label of the exported statuses; a multi-frame source is
referenced whole (frames without a label are empty).

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
from segdesk.core import deid, storage
from segdesk.core.dicom_series import Series
from segdesk.core.export_series import ExportReport, collect, series_shape

log = logging.getLogger(__name__)
# highdicom logs the UIDs of the datasets it copies from at INFO: UIDs link back to the patient.
logging.getLogger("highdicom").setLevel(logging.WARNING)

SEG_SERIES_NUMBER = 9000  # a high number keeps derived series after the acquired ones
_SOURCE_GEOMETRY = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


def _segments(classes) -> list[hd.seg.SegmentDescription]:
    algorithm = hd.AlgorithmIdentificationSequence(
        name="segdesk", family=codes.cid7162.ArtificialIntelligence, version=__version__)
    return [
        hd.seg.SegmentDescription(
            segment_number=i,
            segment_label=c.name[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            # a model proposed, a person corrected and accepted
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*c.rgb),
        )
        for i, c in enumerate(classes, start=1)
    ]


def _source(header: Dataset, keep_patient_data: bool) -> Dataset:
    ds = copy.deepcopy(header)
    if not keep_patient_data:
        deid.scrub(ds)
    return ds


def _series_seg(series: Series, masks: dict, classes, number: int, keep_patient_data: bool):
    """(SEG dataset, None) or (None, reason)."""
    shape = series_shape(series)
    if shape is None:
        return None, "its images differ in size; a DICOM SEG needs one size per series"
    multiframe = any(sl.frame is not None for sl in series.slices)
    if multiframe:
        if len({sl.path for sl in series.slices}) != 1:
            return None, "it mixes several multi-frame files"
        header = series.slices[0].header
        if not all(g in header for g in _SOURCE_GEOMETRY):
            return None, ("its multi-frame file has no per-frame geometry (functional groups), which a "
                          "DICOM SEG needs; export it with --format nifti or png")
        frames = sorted(series.slices, key=lambda sl: sl.frame)
        pixel = np.zeros((len(frames), *shape), np.uint8)
        for i, sl in enumerate(frames):
            if sl.key.id in masks:
                pixel[i] = masks[sl.key.id]
        sources = [_source(header, keep_patient_data)]
    else:
        chosen = [sl for sl in series.slices if sl.key.id in masks]
        pixel = np.stack([masks[sl.key.id] for sl in chosen])
        sources = [_source(sl.header, keep_patient_data) for sl in chosen]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segments(classes),
        series_instance_uid=hd.UID(),
        series_number=number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
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
    return seg, None


def export_dicom_seg(project, out_dir: Path, statuses: set[str],
                     keep_patient_data: bool = False) -> ExportReport:
    """Write '<series key>.seg.dcm' for each DICOM series with labels; other images are skipped."""
    found = collect(project, statuses)
    report = found.report
    for entry in found.others:
        report.skipped.append((entry.id, "not a DICOM image: a DICOM SEG needs DICOM sources "
                                         "(use --format png or nifti)"))
    for n, series in enumerate(found.series):
        try:
            seg, reason = _series_seg(series, found.masks, project.classes, SEG_SERIES_NUMBER + n,
                                      keep_patient_data)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # highdicom refusing the sources
            log.debug("DICOM SEG for %s failed", series.key, exc_info=True)
            seg, reason = None, f"highdicom could not build a DICOM SEG from it ({exc})"
        if seg is None:
            report.skipped.append((series.key, reason))
            continue
        path = Path(out_dir) / f"{series.key}.seg.dcm"
        storage.atomic_write_bytes(path, _encode(seg))
        report.written.append(path)
    return report


def _encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
