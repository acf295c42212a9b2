"""The DICOM image type and its small helpers, free of pydicom so the display code can use them
without importing pydicom (segdesk.core.dicom reads the files)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from segdesk.core.exchange import DICOM_ID_PREFIX
from segdesk.core.image import Image


@dataclass(frozen=True, eq=False)  # eq=False: == on ndarrays is elementwise, not a bool
class DicomImage(Image):
    """One frame of a DICOM file: stored (modality) values plus what the display needs.

    Only modality, series description, instance number and frame are kept for display; patient
    identifiers and UIDs are not (``uid_key`` is a hash of the SOP Instance UID).
    """

    frame: int | None = None  # 0-based index into a multi-frame file; None for a single frame
    n_frames: int = 1
    modality: str = ""
    series_description: str = ""
    instance_number: int | None = None
    windows: tuple[tuple[str, float, float], ...] = ()  # (name, low, high) from the file, first = default
    voi_lut: tuple[int, np.ndarray] | None = None  # (first stored value mapped, table of 0..1 floats)
    invert: bool = False  # MONOCHROME1: turned over on screen only, never in ``pixels``
    transfer_syntax: str = ""
    uid_key: str = ""  # hash of the SOP Instance UID


def window_from_center_width(center: float, width: float) -> tuple[float, float]:
    """(low, high) of a DICOM window: center -/+ width / 2 (the linear function to within one unit)."""
    return float(center) - float(width) / 2.0, float(center) + float(width) / 2.0


def center_width(window: tuple[float, float]) -> tuple[float, float]:
    low, high = window
    return (low + high) / 2.0, high - low


def uid_hash(uid: str) -> str:
    return hashlib.sha256(str(uid).encode("ascii", "replace")).hexdigest()[:16]


def image_id(image: DicomImage, sha256: str, taken) -> str:
    """'dcm-<hash of SOP Instance UID>[-f<frame number>]', unique among ``taken`` ids; the file's
    content hash stands in for a missing UID. Never built from the file name."""
    base = f"{DICOM_ID_PREFIX}{image.uid_key or sha256[:16]}"
    if image.frame is not None:
        base += f"-f{image.frame + 1:04d}"  # DICOM frame numbers count from 1
    candidate, n = base, 1
    while candidate in taken:  # the same SOP Instance UID in two different files
        n += 1
        candidate = f"{base}-{n}"
    return candidate
