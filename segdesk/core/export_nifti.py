"""NIfTI label maps (nibabel): one volume per DICOM series, one 2D map per other image.

Values: 0 = background, 1..K = the project's classes (listed in ``classes.json`` beside them).
A series volume holds every image of that series in the project, in slice order along the
normal; slices without an exported label are 0. Voxel (i, j, k) is column i, row j, slice k.

The affine maps voxels to RAS millimetres (NIfTI's convention; DICOM's is LPS, hence the sign
flip of x and y) from Image Position/Orientation (Patient) and Pixel Spacing; the slice step is
the mean step between slice positions (uneven steps are reported). Without that geometry the
affine only scales by the pixel spacing (or 1 mm), and the qform/sform codes say "unknown".
File names come from the series number and a hash of its UID, or from the image's export name:
never from DICOM file names, which often hold patient names. The header carries no text from
the source.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from segdesk.core import encoding, exchange, storage
from segdesk.core.dicom_series import Series, normal
from segdesk.core.export_series import ExportReport, collect, series_shape

log = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SCANNER, UNKNOWN = 1, 0  # NIfTI xform codes
UNEVEN = 0.01  # relative slice-step spread reported as uneven


def series_affine(series: Series) -> tuple[np.ndarray, bool, str | None]:
    """(4 x 4 RAS affine, from patient geometry?, note about the geometry or None)."""
    first = series.slices[0]
    drow, dcol = first.spacing or (1.0, 1.0)
    geometry = all(sl.position is not None and sl.orientation is not None for sl in series.slices)
    if not geometry:
        return np.diag([dcol, drow, 1.0, 1.0]), False, "no patient geometry in the files: voxel-sized affine"
    row_cos, col_cos = first.orientation[:3], first.orientation[3:]
    positions = np.stack([sl.position for sl in series.slices])
    note = None
    if len(series.slices) > 1:
        steps = np.diff(positions @ normal(first.orientation))
        step = (positions[-1] - positions[0]) / (len(series.slices) - 1)
        if np.ptp(steps) > UNEVEN * max(abs(float(np.mean(steps))), 1e-6) or np.any(np.abs(steps) < 1e-6):
            note = "uneven slice spacing (missing or repeated slices?): the affine uses the mean step"
    else:
        header = first.header
        thickness = float(header.get("SpacingBetweenSlices") or header.get("SliceThickness") or 1.0)
        step = normal(first.orientation) * thickness
    lps = np.eye(4)
    lps[:3, 0] = row_cos * dcol  # i: along a row, one column to the next
    lps[:3, 1] = col_cos * drow  # j: down a column, one row to the next
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return LPS_TO_RAS @ lps, True, note


def _write(path: Path, data: np.ndarray, affine: np.ndarray, code: int) -> None:
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=code)
    image.set_sform(affine, code=code)
    image.header["descrip"] = b"segdesk labels"
    storage.atomic_write_bytes(path, gzip.compress(image.to_bytes(), mtime=0))  # .nii.gz


def export_nifti(project, out_dir: Path, statuses: set[str]) -> ExportReport:
    """Write '<series key>.nii.gz' per DICOM series and '<name>.nii.gz' per other labelled image."""
    out_dir = Path(out_dir)
    found = collect(project, statuses)
    report = found.report
    for series in found.series:
        shape = series_shape(series)
        if shape is None:
            report.skipped.append((series.key, "its images differ in size; one volume needs one size"))
            continue
        volume = np.zeros((len(series.slices), *shape), np.uint8)
        for k, sl in enumerate(series.slices):
            if sl.key.id in found.masks:
                volume[k] = found.masks[sl.key.id]
        affine, scanner, note = series_affine(series)
        if note:
            report.notes.append(f"{series.key}: {note}")
        path = out_dir / f"{series.key}.nii.gz"
        _write(path, np.ascontiguousarray(volume.transpose(2, 1, 0)), affine, SCANNER if scanner else UNKNOWN)
        report.written.append(path)
    names = exchange.export_names(project.images)
    for entry in found.others:
        path = out_dir / (Path(names[entry.id]).stem + ".nii.gz")
        mask = found.masks[entry.id]
        _write(path, np.ascontiguousarray(mask.T[:, :, None]), np.eye(4), UNKNOWN)
        report.written.append(path)
    if report.written:
        labels = [{"value": 0, "name": "background"}]
        labels += [{"value": encoding.class_number(i), "name": c.name, "colour": c.color}
                   for i, c in enumerate(project.classes)]
        storage.atomic_write_json(out_dir / "classes.json", {"labels": labels})
    return report
