"""Loading an image's stored label for editing, without ever losing an unusable file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from segdesk.core.errors import LabelError
from segdesk.core.project import Project

log = logging.getLogger(__name__)


def set_aside(path: Path) -> Path:
    """Rename an unusable label (``x.png.unreadable``, ``...2``) so autosave never overwrites it."""
    target = path.with_name(path.name + ".unreadable")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.unreadable{n}")
    try:
        path.rename(target)
    except OSError as exc:
        log.warning("could not set aside %s: %s", path, exc)
    return target


def load_for_editing(project: Project, image_id: str) -> tuple[np.ndarray, str | None]:
    """(label to edit, warning). A label that does not fit its image (wrong size, bad values,
    corrupt) is set aside and an empty label starts; the warning says where the file went."""
    entry = project.image(image_id)
    try:
        label = project.read_label(image_id)
    except LabelError as exc:
        moved = set_aside(project.label_path(image_id))
        return np.zeros(entry.shape, np.uint8), f"{exc}\nThe file was kept as {moved.name}; a new empty label was started."
    return (label if label is not None else np.zeros(entry.shape, np.uint8)), None
