"""What the volume exports (DICOM SEG, NIfTI) share: the labelled images of a project, their
exchange masks (0 = background, 1..K = classes), and their DICOM series."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segdesk.core import encoding, exchange
from segdesk.core.dicom_series import Series, group_series
from segdesk.core.errors import SegdeskError


@dataclass
class ExportReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image id or series name, reason)
    notes: list[str] = field(default_factory=list)  # warnings that did not stop a file


@dataclass
class Labelled:
    """The project's DICOM series (every image of them in the project, ordered along the slice
    normal) and the other images, with the exchange mask of each image whose status is wanted."""

    series: list[Series]
    others: list  # ImageEntry of images that are not DICOM
    masks: dict[str, np.ndarray]  # image id -> mask 0..K (uint8), only for wanted, labelled images
    report: ExportReport


def collect(project, statuses: set[str]) -> Labelled:
    report = ExportReport()
    masks: dict[str, np.ndarray] = {}
    for entry in project.images:
        if entry.status not in statuses:
            continue
        try:
            label = project.read_label(entry.id)
        except SegdeskError as exc:
            report.skipped.append((entry.id, str(exc)))
            continue
        if label is None:
            report.skipped.append((entry.id, "its label file is missing"))
            continue
        masks[entry.id] = encoding.label_to_mask(label)
    dicom_like = [e for e in project.images if e.id.startswith(exchange.DICOM_ID_PREFIX)]
    series, problems = group_series((e, project.source_path(e), e.frame) for e in dicom_like)
    for entry, reason in problems:
        if entry.id in masks:
            report.skipped.append((entry.id, reason))
            del masks[entry.id]
    series = [s for s in series if any(sl.key.id in masks for sl in s.slices)]
    others = [e for e in project.images if e.id in masks and not e.id.startswith(exchange.DICOM_ID_PREFIX)]
    return Labelled(series, others, masks, report)


def series_shape(series: Series) -> tuple[int, int] | None:
    """(rows, columns) shared by every image of the series, or None when they differ."""
    shapes = {(sl.key.height, sl.key.width) for sl in series.slices}
    return shapes.pop() if len(shapes) == 1 else None
