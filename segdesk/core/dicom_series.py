"""DICOM files as series: finding them in folders, grouping by Series Instance UID, slice order
and slice geometry (for NIfTI affines and DICOM Segmentation references).

Headers are read without pixel data. UIDs and other header values stay in memory: nothing here
is logged or written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from pydicom.dataset import Dataset

from segdesk.core import dicom, imageio

log = logging.getLogger(__name__)

# Tags enough to group and order files (reading only these keeps adding a big folder quick).
_ORDER_TAGS = ["SeriesInstanceUID", "SeriesNumber", "InstanceNumber", "ImagePositionPatient",
               "ImageOrientationPatient", "NumberOfFrames", "Rows", "SOPInstanceUID"]


def looks_like_dicom(path: Path) -> bool:
    """A file in a folder that may be DICOM though its name does not say so: no suffix, or a numeric
    one ('IM0001', '1.2.840.113619.2.1'), with DICOM's first bytes. One 132-byte read."""
    suffix = path.suffix.lower()
    if suffix == ".dcm":
        return True
    if (suffix and not suffix[1:].isdigit()) or path.name.upper() == "DICOMDIR":
        return False
    return _is_dicom(path)


def _is_dicom(path: Path) -> bool:
    """By suffix, or by the first bytes as imageio sniffs them (preamble and 'DICM', or none)."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            return imageio.is_dicom_head(f.read(132))
    except OSError:
        return False


@dataclass
class Slice:
    """One image of a series: a file, and the frame in it for multi-frame files."""

    path: Path
    frame: int | None
    instance: int | None
    position: np.ndarray | None = None  # ImagePositionPatient, mm (LPS)
    orientation: np.ndarray | None = None  # ImageOrientationPatient: row then column cosines
    spacing: tuple[float, float] | None = None  # PixelSpacing: between rows, between columns (mm)
    header: Dataset | None = None
    key: object = None  # the caller's handle (an ImageEntry, say)


@dataclass
class Series:
    uid: str
    number: int | None
    slices: list[Slice] = field(default_factory=list)

    @property
    def key(self) -> str:
        """A short name safe for file names: series number and a hash of the UID (not the UID)."""
        number = f"{self.number:03d}-" if self.number is not None else ""
        return f"series-{number}{dicom.uid_hash(self.uid)[:8]}"


def _vector(value, n: int) -> np.ndarray | None:
    values = dicom.to_numbers(value)
    if len(values) != n or not all(np.isfinite(values)):
        return None
    return np.asarray(values, dtype=np.float64)


def slices_of(path: Path, ds: Dataset) -> list[Slice]:
    """The images one file holds (one per frame), with their geometry where the header gives it."""
    total = dicom.n_frames(ds)
    number = ds.get("InstanceNumber")
    instance = int(dicom.to_number(number, 0)) if number not in (None, "") else None
    out = []
    for frame in range(total) if total > 1 else [None]:
        plane = dicom.frame_item(ds, frame, "PlanePositionSequence")
        orient = dicom.frame_item(ds, frame, "PlaneOrientationSequence")
        measures = dicom.frame_item(ds, frame, "PixelMeasuresSequence")
        spacing = _vector(measures.get("PixelSpacing"), 2)
        out.append(Slice(path, frame, instance,
                         position=_vector(plane.get("ImagePositionPatient"), 3),
                         orientation=_vector(orient.get("ImageOrientationPatient"), 6),
                         spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
                         header=ds))
    return out


def normal(orientation: np.ndarray) -> np.ndarray:
    return np.cross(orientation[:3], orientation[3:])


def _by_position(slices: list[Slice]) -> bool:
    return all(s.position is not None and s.orientation is not None for s in slices)


def sort_for_list(slices: list[Slice]) -> list[Slice]:
    """The order a radiology viewer lists a series in: Instance Number, else position, else file."""
    if all(s.instance is not None for s in slices):
        return sorted(slices, key=lambda s: (s.instance, str(s.path), s.frame or 0))
    return sort_by_position(slices)


def sort_by_position(slices: list[Slice]) -> list[Slice]:
    """Along the slice normal (what a volume needs), else by Instance Number, else by file."""
    if _by_position(slices):
        n = normal(slices[0].orientation)
        return sorted(slices, key=lambda s: (float(np.dot(s.position, n)), s.frame or 0))
    return sorted(slices, key=lambda s: (s.instance if s.instance is not None else 0, str(s.path),
                                         s.frame or 0))


def order_sources(paths: Iterable[Path]) -> list[tuple[Path, int | None]]:
    """(file, frame) for every image of ``paths``: DICOM files grouped by series (each series where
    its first file was), slices in viewer order, multi-frame files expanded into their frames.
    Other files, and DICOM files whose header cannot be read, pass through unchanged (frame None):
    reading them reports the problem."""
    out: list = []
    series: dict[str, list[Slice]] = {}
    for path in paths:
        if not _is_dicom(path):
            out.append((path, None))
            continue
        try:
            ds = dicom.read_header(path, tags=_ORDER_TAGS)
        except Exception:  # noqa: BLE001 - read_image gives the typed error with its reason
            log.debug("no DICOM header in %s", path.name)
            out.append((path, None))
            continue
        if "Rows" not in ds:
            out.append((path, None))
            continue
        uid = str(ds.get("SeriesInstanceUID") or f"file:{path}")
        if uid not in series:
            series[uid] = []
            out.append(uid)
        series[uid].extend(slices_of(path, ds))
    ordered = []
    for item in out:
        if isinstance(item, str):
            ordered.extend((s.path, s.frame) for s in sort_for_list(series[item]))
        else:
            ordered.append(item)
    return ordered


def group_series(items: Iterable[tuple[object, os.PathLike | str, int | None]]) -> tuple[list[Series], list]:
    """Group (key, path, frame) by series with full headers (no pixels), ordered along the normal.

    Returns (series, problems): problems are (key, reason) for sources that are not DICOM or whose
    header cannot be read. Each Slice carries the file's dataset as ``header`` and ``key``.
    """
    headers: dict[str, Dataset] = {}
    groups: dict[str, Series] = {}
    problems = []
    for key, path, frame in items:
        path = Path(path)
        if not _is_dicom(path):
            problems.append((key, "not a DICOM image"))
            continue
        try:
            ds = headers.get(str(path)) or dicom.read_header(path)
        except Exception as exc:  # noqa: BLE001 - a broken file is reported, not raised
            problems.append((key, f"DICOM header unreadable ({type(exc).__name__})"))
            continue
        headers[str(path)] = ds
        uid = str(ds.get("SeriesInstanceUID") or f"file:{path}")
        number = ds.get("SeriesNumber")
        number = int(dicom.to_number(number, 0)) if number not in (None, "") else None
        series = groups.setdefault(uid, Series(uid, number))
        match = [s for s in slices_of(path, ds) if s.frame == frame]
        if not match:
            problems.append((key, "its frame is not in the file any more"))
            continue
        match[0].key = key
        series.slices.append(match[0])
    for series in groups.values():
        series.slices = sort_by_position(series.slices)
    return list(groups.values()), problems
