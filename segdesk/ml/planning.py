"""The project's working scale, planned from a fingerprint of its labels (as nnU-Net plans).

The U-Net sees a crop of ``crop_size`` pixels. Large structures in large images are better seen
downscaled: more context per crop and faster steps. Small structures must keep their pixels.

Rule: take the median equivalent diameter D (at full resolution) of the connected foreground
components in the accepted labels, and the median shorter image side S. Then

    scale = min(1, max(TARGET_DIAMETER / D, crop_size / S, MIN_SCALE))

so the median object stays at least ~48 px wide and the median image does not shrink below one crop.
A scale above 0.9 is rounded to 1 (resampling would cost more than it saves). Without accepted
foreground there is nothing to plan from: 1.0. ``project.settings["working_scale"]`` overrides.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from segdesk.core.errors import SegdeskError

log = logging.getLogger(__name__)

TARGET_DIAMETER = 48.0
MIN_SCALE = 0.125
KEEP_FULL_ABOVE = 0.9
# Labels are measured on a view whose longer side is at most this (fast on huge images); components
# smaller than a few view pixels are ignored as specks.
_VIEW_SIDE = 512
_MIN_VIEW_AREA = 4
_MAX_LABELS = 64


def _override(project) -> float | None:
    value = project.settings.get("working_scale")
    if value is None:
        return None
    try:
        scale = float(value)
    except (TypeError, ValueError):
        log.warning("ignoring working_scale setting %r: not a number", value)
        return None
    if not 0 < scale <= 1:
        log.warning("ignoring working_scale setting %r: it must be in (0, 1]", value)
        return None
    return scale


def object_diameters(label: np.ndarray) -> list[float]:
    """Equivalent diameters (full-resolution pixels) of each class's connected components."""
    factor = min(1.0, _VIEW_SIDE / max(label.shape))
    view = label
    if factor < 1.0:
        size = (max(1, round(label.shape[1] * factor)), max(1, round(label.shape[0] * factor)))
        view = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    diameters = []
    for value in np.unique(view):
        if value < 2:  # 0 = unlabelled, 1 = background
            continue
        n, _, stats, _ = cv2.connectedComponentsWithStats((view == value).astype(np.uint8), connectivity=8)
        areas = stats[1:n, cv2.CC_STAT_AREA]
        areas = areas[areas >= _MIN_VIEW_AREA]
        diameters.extend((np.sqrt(4 * areas / np.pi) / factor).tolist())
    return diameters


def choose_working_scale(project, crop_size: int = 256) -> float:
    """Scale in (0, 1] at which the model sees this project's images (see the module docstring)."""
    override = _override(project)
    if override is not None:
        return override
    ids = project.accepted_ids()
    if not ids:
        return 1.0
    if len(ids) > _MAX_LABELS:  # an even spread is enough for a median
        ids = [ids[i] for i in np.linspace(0, len(ids) - 1, _MAX_LABELS).round().astype(int)]
    diameters: list[float] = []
    sides: list[int] = []
    for image_id in ids:
        try:
            label = project.read_label(image_id)
        except SegdeskError as exc:
            log.warning("planning skips %s: %s", image_id, exc)
            continue
        if label is None:
            continue
        diameters.extend(object_diameters(label))
        sides.append(min(label.shape))
    if not diameters:
        return 1.0
    d = float(np.median(diameters))
    s = float(np.median(sides))
    scale = min(1.0, max(TARGET_DIAMETER / d, crop_size / s, MIN_SCALE))
    if scale > KEEP_FULL_ABOVE:
        scale = 1.0
    scale = round(scale, 3)
    log.info("working scale %.3f (median object %.0f px, median shorter side %.0f px)", scale, d, s)
    return scale
