"""The working resolution, planned from a fingerprint of the accepted labels (as nnU-Net plans).

The U-Net sees a crop of ``crop_size`` pixels. Large structures in large images are better seen
downscaled: more context per crop and faster steps. Small structures must keep their pixels. The
plan is a rule (``ScaleRule``), stored in each checkpoint and applied per image in training,
validation and inference.

Fixed scale (images of one size, or objects that keep their pixel size, as in microscopy): take
the median equivalent diameter D (at full resolution) of the connected foreground components in
the accepted labels, and the median shorter image side S. Then

    scale = min(1, max(TARGET_DIAMETER / D, crop_size / S, MIN_SCALE))

so the median object stays at least ~48 px wide and the median image does not shrink below one
crop. A scale above 0.9 is rounded to 1 (resampling would cost more than it saves).

Per image, by the shorter side (images from many sources, where a structure's size follows the
image's size): used when the shorter sides differ by more than SIZE_SPREAD (max / min) and sizing
per image would make the objects clearly more alike: over the images, the variance of
log(median object diameter / shorter side) is below half the variance of log(median object
diameter) (objects that scale with their images leave little; nuclei in microscopy, which keep
their pixel size whatever the field of view, leave as much or more), and it would not shrink any
image's median object below KEEP_SMALLEST (3/4) of the smallest one under the fixed scale (a
guard for sets where image size follows the modality, not the field of view: in dsb2018 the
largest images hold mid-sized nuclei that a per-image rule would shrink to 5 px). Each image is
then scaled so that its shorter side becomes N px, with N the fixed-scale formula applied to the
median image:

    N = min(S, max(TARGET_DIAMETER / R, crop_size, MIN_SCALE * S))

where R is the median relative diameter (diameter / its image's shorter side), so the median
object is ~48 px wide in every image. An image is enlarged at most MAX_UPSCALE times, and a
per-image scale within 10% of 1 is taken as 1.

Without accepted foreground there is nothing to plan from: scale 1. ``project.settings
["working_scale"]`` overrides with a fixed scale. DICOM pixel spacing is not used yet: images
reach training without it, so objects with a known physical size are still planned from labels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from segdesk.core.errors import SegdeskError

log = logging.getLogger(__name__)

TARGET_DIAMETER = 48.0
MIN_SCALE = 0.125
KEEP_FULL_ABOVE = 0.9
SIZE_SPREAD = 1.5  # shorter sides differing by more than this (max / min) may need a per-image scale
MAX_VARIANCE_KEPT = 0.5  # a per-image rule must remove at least half the spread of object sizes
KEEP_SMALLEST = 0.75  # ... and keep the smallest objects at least this share of their fixed-scale width
MAX_UPSCALE = 4.0
REPLAN_FACTOR = 1.25  # a planned per-image side is replaced when a re-plan moves it by more
FIXED = "fixed"
SHORTER_SIDE = "shorter_side"
# Labels are measured on a view whose longer side is at most this (fast on huge images); components
# smaller than a few view pixels are ignored as specks.
_VIEW_SIDE = 512
_MIN_VIEW_AREA = 4
_MAX_LABELS = 64


# ----- the fingerprint of one label


@dataclass(frozen=True)
class Fingerprint:
    """What planning needs from one accepted label (disk encoding), measured once."""

    height: int
    width: int
    diameters: tuple[float, ...]  # equivalent diameters (full-resolution px) of every class's components
    # class 1..K present -> (y, x) of the centre of its pixels, as fractions of the image height, width
    centroids: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def side(self) -> int:
        return min(self.height, self.width)


def _view(label: np.ndarray) -> tuple[np.ndarray, float]:
    factor = min(1.0, _VIEW_SIDE / max(label.shape))
    if factor == 1.0:
        return label, factor
    size = (max(1, round(label.shape[1] * factor)), max(1, round(label.shape[0] * factor)))
    return cv2.resize(label, size, interpolation=cv2.INTER_NEAREST), factor


def object_diameters(label: np.ndarray) -> list[float]:
    """Equivalent diameters (full-resolution pixels) of each class's connected components."""
    return list(fingerprint(label).diameters)


def fingerprint(label: np.ndarray) -> Fingerprint:
    """Object sizes and class positions of a label (0 unlabelled, 1 background, 2.. classes)."""
    view, factor = _view(label)
    h, w = view.shape
    diameters: list[float] = []
    centroids: dict[int, tuple[float, float]] = {}
    for value in np.unique(view):
        if value < 2:
            continue
        binary = (view == value).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        areas = stats[1:n, cv2.CC_STAT_AREA]
        areas = areas[areas >= _MIN_VIEW_AREA]
        diameters.extend((np.sqrt(4 * areas / np.pi) / factor).tolist())
        ys, xs = np.nonzero(binary)
        centroids[int(value) - 1] = ((float(ys.mean()) + 0.5) / h, (float(xs.mean()) + 0.5) / w)
    return Fingerprint(int(label.shape[0]), int(label.shape[1]), tuple(diameters), centroids)


def read_fingerprints(project, cache: dict | None = None) -> list[Fingerprint]:
    """Fingerprints of (an even spread of at most 64 of) the project's accepted labels. ``cache``
    (image id and label file time -> fingerprint) spares re-reading labels on the next plan."""
    ids = project.accepted_ids()
    if len(ids) > _MAX_LABELS:  # an even spread is enough for medians and shares
        ids = [ids[i] for i in np.linspace(0, len(ids) - 1, _MAX_LABELS).round().astype(int)]
    found = []
    used = set()
    for image_id in ids:
        try:
            key = (image_id, project.label_path(image_id).stat().st_mtime_ns)
        except OSError:
            continue
        used.add(key)
        if cache is not None and key in cache:
            found.append(cache[key])
            continue
        try:
            label = project.read_label(image_id)
        except SegdeskError as exc:
            log.warning("planning skips %s: %s", image_id, exc)
            continue
        if label is None:
            continue
        measured = fingerprint(label)
        if cache is not None:
            cache[key] = measured
        found.append(measured)
    if cache is not None:
        for stale in set(cache) - used:  # older label versions
            del cache[stale]
    return found


# ----- the rule


@dataclass(frozen=True)
class ScaleRule:
    """How an image is resized before the model sees it: by one fixed ``scale``, or (``side`` set)
    per image so that its shorter side becomes ``side`` pixels."""

    scale: float = 1.0
    side: int | None = None

    @property
    def per_image(self) -> bool:
        return self.side is not None

    def scale_for(self, height: int, width: int) -> float:
        if self.side is None:
            return self.scale
        s = min(self.side / max(1, min(height, width)), MAX_UPSCALE)
        return 1.0 if KEEP_FULL_ABOVE < s < 1 / KEEP_FULL_ABOVE else round(s, 4)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of an image at working resolution."""
        s = self.scale_for(height, width)
        return max(1, round(height * s)), max(1, round(width * s))

    def resize(self, array: np.ndarray, nearest: bool = False) -> np.ndarray:
        """An image (H x W x C) or, with ``nearest``, a label (H x W) at working resolution."""
        height, width = array.shape[:2]
        size = self.working_size(height, width)
        if size == (height, width):
            return array
        if nearest:
            interpolation = cv2.INTER_NEAREST
        else:
            interpolation = cv2.INTER_AREA if size[0] < height else cv2.INTER_LINEAR
        out = cv2.resize(array, (size[1], size[0]), interpolation=interpolation)
        if array.ndim == 3 and out.ndim == 2:  # OpenCV drops a channel axis of length 1
            out = out[:, :, None]
        return out

    def area_factor(self, height: int, width: int) -> float:
        """Converts a checkpoint's post-processing areas to pixels of an image of this size. Under a
        fixed scale they are stored in full-resolution pixels (as always); under a per-image rule in
        working-resolution pixels, since full-resolution sizes then differ between images."""
        return 1.0 if self.side is None else 1.0 / self.scale_for(height, width) ** 2

    @property
    def stored_area_scale(self) -> float:
        """Converts areas at working resolution to the unit ``area_factor`` expects."""
        return 1.0 / self.scale**2 if self.side is None else 1.0

    def to_meta(self) -> dict:
        if self.side is None:
            return {"kind": FIXED, "scale": self.scale}
        return {"kind": SHORTER_SIDE, "side": self.side}

    @classmethod
    def from_meta(cls, meta: dict) -> "ScaleRule":
        """The rule a checkpoint was trained with; a checkpoint from before rules had only a number
        ``working_scale``, which is a fixed scale."""
        rule = meta.get("scale_rule")
        if isinstance(rule, dict) and rule.get("kind") == SHORTER_SIDE and _positive(rule.get("side")):
            return cls(side=int(rule["side"]))
        if isinstance(rule, dict) and rule.get("kind") == FIXED and _positive(rule.get("scale")):
            return cls(scale=float(rule["scale"]))
        old = meta.get("working_scale")
        return cls(scale=float(old) if _positive(old) else 1.0)

    def describe(self) -> str:
        if self.side is None:
            return f"all images at scale {self.scale:g}" if self.scale != 1.0 else "full resolution"
        return f"each image to a shorter side of {self.side} px"


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


# ----- planning


def scale_setting(project) -> float | None:
    """The project's working_scale setting when it holds a usable fixed scale."""
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


def fixed_scale(fingerprints: list[Fingerprint], crop_size: int) -> float:
    """One scale for every image (see the module docstring); 1.0 without foreground."""
    diameters = [d for f in fingerprints for d in f.diameters]
    if not diameters:
        return 1.0
    d = float(np.median(diameters))
    s = float(np.median([f.side for f in fingerprints]))
    scale = min(1.0, max(TARGET_DIAMETER / d, crop_size / s, MIN_SCALE))
    if scale > KEEP_FULL_ABOVE:
        scale = 1.0
    return round(scale, 3)


def variance_kept(fingerprints: list[Fingerprint]) -> float | None:
    """var(log relative size) / var(log size in pixels) of the images' median objects: the share of
    the spread in object size (in pixels) a per-image rule would leave. ~0 when objects scale with
    their images, ~1 or more when they keep their pixel size. None without spread to compare."""
    sizes = [(float(np.median(f.diameters)), f.side) for f in fingerprints if f.diameters]
    if len(sizes) < 2:
        return None
    d, s = np.log(np.array(sizes)).T
    spread = float(d.var())
    if spread < 1e-12:
        return None
    return float((d - s).var()) / spread


def _shorter_side(fingerprints: list[Fingerprint], crop_size: int) -> int:
    """N of the per-image rule: the fixed-scale formula for the median image (module docstring)."""
    relative = [d / f.side for f in fingerprints for d in f.diameters]
    s = float(np.median([f.side for f in fingerprints]))
    return int(round(min(s, max(TARGET_DIAMETER / float(np.median(relative)), crop_size, MIN_SCALE * s))))


def _smallest_object(fingerprints: list[Fingerprint], rule: ScaleRule) -> float:
    """The smallest of the images' median object diameters at working resolution under ``rule``."""
    return min(float(np.median(f.diameters)) * rule.scale_for(f.height, f.width) for f in fingerprints)


def choose_scale_rule(fingerprints: list[Fingerprint], crop_size: int) -> ScaleRule:
    """Per image by the shorter side where sizes differ and objects follow them, else fixed."""
    fixed = ScaleRule(scale=fixed_scale(fingerprints, crop_size))
    with_objects = [f for f in fingerprints if f.diameters]
    sides = [f.side for f in with_objects]
    kept = variance_kept(with_objects)
    if sides and max(sides) > SIZE_SPREAD * min(sides) and kept is not None and kept < MAX_VARIANCE_KEPT:
        per_image = ScaleRule(side=_shorter_side(fingerprints, crop_size))
        smallest, smallest_fixed = _smallest_object(with_objects, per_image), _smallest_object(with_objects, fixed)
        if smallest >= KEEP_SMALLEST * smallest_fixed:
            log.debug("working resolution: shorter side %d px per image (sides %d-%d px, size spread kept %.2f)",
                      per_image.side, min(sides), max(sides), kept)
            return per_image
        log.debug("no per-image scale: it would shrink some images' objects to %.0f px (fixed scale: %.0f px)",
                  smallest, smallest_fixed)
    log.debug("working scale %.3f (%d labels, size spread kept per image %s)", fixed.scale, len(fingerprints),
              "-" if kept is None else f"{kept:.2f}")
    return fixed


def plan_scale_rule(project, crop_size: int = 256, cache: dict | None = None) -> ScaleRule:
    """The project's rule: its working_scale setting (a fixed scale), else planned from its labels."""
    override = scale_setting(project)
    if override is not None:
        return ScaleRule(scale=override)
    return choose_scale_rule(read_fingerprints(project, cache), crop_size)


def keep_or_replace(kept: ScaleRule | None, planned: ScaleRule) -> ScaleRule:
    """The rule to train with after a re-plan: ``kept`` while ``planned`` agrees with it, since a
    new rule invalidates the image cache; ``planned`` when the kind of rule changes (fixed or per
    image) or a per-image side moves by more than REPLAN_FACTOR. Images of one size thus keep the
    scale planned first."""
    if kept is None or kept.per_image != planned.per_image or (
        planned.per_image and max(kept.side / planned.side, planned.side / kept.side) > REPLAN_FACTOR
    ):
        return planned
    return kept


def choose_working_scale(project, crop_size: int = 256) -> float:
    """One scale in (0, 1] for all of this project's images: the setting, else the fixed-scale plan."""
    override = scale_setting(project)
    if override is not None:
        return override
    return fixed_scale(read_fingerprints(project), crop_size)
