"""Mask files in and out of a project, in the usual exchange format.

Exchange masks (what other tools read and write) are single-channel PNGs holding class masks:
0 = background and 1..K = the project's classes in order. Converting them to and from the
project's labels is segdesk.core.encoding's (on import every pixel is labelled; on export, not
labelled and background both become 0).

Mask files are matched to project images by the source file's stem ("scan01.tif" <-> "scan01.png");
when several images share a stem, by image id instead, which is also the name export gives them.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Iterable, Protocol

import cv2
import numpy as np

from segdesk.core import storage
from segdesk.core.errors import LabelError, StorageError

MASK_SUFFIX = ".png"
# Ids of DICOM images start with this and hash the SOP Instance UID (segdesk.core.dicom.image_id):
# DICOM file names often hold patient names, so exports name those images by id, never by file.
DICOM_ID_PREFIX = "dcm-"


class _Entry(Protocol):  # the parts of project.ImageEntry used here
    id: str
    source: str
    width: int
    height: int


# ----- files


def source_stem(entry: _Entry) -> str:
    # PurePath handles both separators well enough for a stem; sources are stored as this OS wrote them
    return PurePath(entry.source.replace("\\", "/")).stem


def export_names(entries: Iterable[_Entry]) -> dict[str, str]:
    """File name per image id: '<source stem>.png', or '<image id>.png' when the stem is shared
    or the image is DICOM.

    Stems are compared without case, since macOS and Windows folders do not tell 'A.png' from 'a.png'.
    Pass every image of the project so a name does not depend on which images happen to be exported.
    """
    entries = list(entries)
    counts = Counter(source_stem(e).lower() for e in entries)
    names = {}
    for e in entries:
        stem = source_stem(e)
        by_stem = counts[stem.lower()] == 1 and stem and not e.id.startswith(DICOM_ID_PREFIX)
        names[e.id] = (stem if by_stem else e.id) + MASK_SUFFIX
    return names


@dataclass
class MaskMatch:
    matched: list[tuple[Path, _Entry]]
    skipped: list[tuple[Path, str]]  # (mask path, reason)


def list_masks(folder: str | os.PathLike) -> list[Path]:
    """The PNG files directly inside ``folder``, sorted. StorageError if it is not a readable folder."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise StorageError(f"Mask folder {folder} does not exist.")
    if not folder.is_dir():
        raise StorageError(f"{folder} is not a folder; give the folder that holds the mask PNGs.")
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        raise StorageError(f"Could not read mask folder {folder}: {exc.strerror or exc}.") from exc
    return [p for p in children if p.is_file() and p.suffix.lower() == MASK_SUFFIX]


def match_masks(mask_paths: Iterable[Path], entries: Iterable[_Entry]) -> MaskMatch:
    """Pair mask files with project images: by image id first, then by a source stem only one image has."""
    entries = list(entries)
    by_id = {e.id: e for e in entries}
    by_stem: dict[str, list[_Entry]] = {}
    for e in entries:
        by_stem.setdefault(source_stem(e), []).append(e)
    result = MaskMatch([], [])
    taken: dict[str, Path] = {}
    for path in mask_paths:
        stem = path.stem
        if stem in by_id:
            entry = by_id[stem]
        elif len(by_stem.get(stem, ())) == 1:
            entry = by_stem[stem][0]
        elif stem in by_stem:
            ids = ", ".join(e.id for e in by_stem[stem])
            result.skipped.append((path, f"{len(by_stem[stem])} images are named {stem}; "
                                         f"name the mask by image id ({ids})"))
            continue
        else:
            result.skipped.append((path, "no project image with this name"))
            continue
        if entry.id in taken:
            result.skipped.append((path, f"image {entry.id} already gets mask {taken[entry.id].name}"))
            continue
        taken[entry.id] = path
        result.matched.append((path, entry))
    return result


def read_mask(path: str | os.PathLike, shape: tuple[int, int], n_classes: int) -> np.ndarray:
    """Read an exchange mask and check it: single channel, ``shape`` (H, W), values 0..n_classes.

    Raises LabelError with a reason a user can act on. A gray image saved as RGB is accepted.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise LabelError(f"could not read: {exc.strerror or exc}") from exc
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if mask is None:
        raise LabelError("not a readable PNG (corrupt or truncated)")
    if mask.ndim == 3:
        colour = mask[..., :3]
        if not (colour == colour[..., :1]).all():
            raise LabelError("is a colour image; a mask must be single-channel with values "
                             f"0..{n_classes}")
        mask = colour[..., 0]
    if mask.shape != tuple(shape):
        raise LabelError(f"is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}")
    top = int(mask.max()) if mask.size else 0
    if top > n_classes:
        hint = "; a 0/255 mask must be divided by 255 first" if top == 255 and n_classes == 1 else ""
        raise LabelError(f"holds value {top} but the project has {n_classes} "
                         f"class{'es' if n_classes != 1 else ''} (values 0..{n_classes}){hint}")
    return mask.astype(np.uint8)


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an exchange mask PNG atomically."""
    storage.write_label(path, np.asarray(mask, dtype=np.uint8))


def prepare_out_dir(folder: str | os.PathLike) -> Path:
    """Create the output folder if needed. StorageError if the path is a file or cannot be made."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise StorageError(f"{folder} is a file, not a folder; give a folder for the masks.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"Could not create folder {folder}: {exc.strerror or exc}.") from exc
    return folder
