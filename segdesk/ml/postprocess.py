"""Post-processing of proposals, chosen from the labels the way nnU-Net chooses its own.

Early models leave small false specks and small holes; a clinician has to erase or fill each one.
Three steps per class can remove them:

- ``largest_only``: only the largest connected component of the class stays (nnU-Net's step; right
  for one object per image, such as a polyp or an organ);
- ``min_area``: connected components of the class smaller than this become background;
- ``max_hole``: background holes inside the class (not touching the image border) smaller than
  this are filled.

Which steps to use, and their thresholds, is decided on the held-out accepted images (nnU-Net's
rule: a step is kept only if it improves Dice there). On the same images the post-processed
proposals' correction effort is compared with drawing from scratch (segdesk.core.effort, the
product's own measure: the new outline the user must draw); where they cost more, ``propose`` is
False and proposals are withheld until a later model does better. Thresholds come from the labels
themselves: speck limits from the sizes of true objects, hole limits from the sizes of true holes,
so a step never targets a size the labels show to be real. Areas are stored in pixels at the
image's own resolution. A model that proposes still withholds its proposal on one image it is far
less sure of than of every held-out image (``unlike_held_out``): what it was judged on does not
speak for that image (another stain, scanner or view). numpy and OpenCV only; the result is plain
JSON for checkpoint metadata.
"""

from __future__ import annotations

import logging
from typing import Iterable

import cv2
import numpy as np

from segdesk.core import effort as fx
from segdesk.core.encoding import IGNORE, dice

log = logging.getLogger(__name__)

VERSION = 1
MIN_GAIN = 0.001  # mean validation Dice a step must add to be kept
MIN_IMAGES = 1  # validation images needed to decide anything
# Proposals are withheld while correcting them cost at least this fraction of drawing from scratch
# on the held-out images (measured: docs/benchmarks.md).
MAX_EFFORT_RATIO = 1.0
# An image is unlike the held-out ones when the model's uncertainty (segdesk.ml.uncertainty) there is
# over this factor times the largest held-out image's, taken as at least UNLIKE_FLOOR: a model very
# sure of its held-out images is not made to withhold a merely ordinary one (with a floor of 0.05 a
# nuclei proposal that saved 40% of the drawing was withheld at 0.10). Round numbers, not fitted:
# docs/benchmarks.md has what they did.
UNLIKE_FACTOR = 2.0
UNLIKE_FLOOR = 0.1
# The steps label connected components (OpenCV: 4 bytes a pixel) beside masks and a copy: about 10
# bytes a pixel, 4 GB for a 20,000 px image. Above this many pixels they are skipped (logged), so a
# whole-slide image's proposal does not take the laptop's memory; the gate still applies.
MAX_PIXELS = 1 << 26


# ----- applying


def _components(binary: np.ndarray, connectivity: int) -> tuple[int, np.ndarray, np.ndarray]:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=connectivity)
    return n, labels, stats


def remove_specks(classes: np.ndarray, value: int, min_area: float) -> np.ndarray:
    """Components (8-connected) of ``value`` with fewer than ``min_area`` pixels become 0."""
    mask = classes == value
    if not mask.any():
        return classes
    n, labels, stats = _components(mask, 8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_area)
    small = small[small > 0]
    if small.size == 0:
        return classes
    out = classes.copy()
    out[np.isin(labels, small) & mask] = 0
    return out


def keep_largest(classes: np.ndarray, value: int) -> np.ndarray:
    """Only the largest component (8-connected) of ``value`` stays; the others become 0."""
    mask = classes == value
    if not mask.any():
        return classes
    n, labels, stats = _components(mask, 8)
    if n <= 2:
        return classes
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    out = classes.copy()
    out[mask & (labels != largest)] = 0
    return out


def fill_holes(classes: np.ndarray, value: int, max_area: float) -> np.ndarray:
    """Background holes (4-connected, not touching the border, all 0) inside ``value`` with at
    most ``max_area`` pixels become ``value``."""
    mask = classes == value
    if not mask.any():
        return classes
    n, labels, stats = _components(~mask, 4)
    h, w = classes.shape
    out = None
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if area > max_area or x == 0 or y == 0 or x + bw == w or y + bh == h:
            continue
        box = (slice(y, y + bh), slice(x, x + bw))
        hole = labels[box] == i
        if (classes[box][hole] != 0).any():  # another class inside: not a hole of this one
            continue
        if out is None:
            out = classes.copy()
        out[box][hole] = value
    return classes if out is None else out


def withholds(spec: dict | None) -> bool:
    """True when the held-out images showed this model's proposals cost more to correct than
    drawing from scratch: the proposal is then withheld (an empty mask is returned). Anything but
    a dict (no spec, or malformed metadata) withholds nothing."""
    return isinstance(spec, dict) and spec.get("propose") is False


def unlike_held_out(spec: dict | None, unsure: float | None) -> bool:
    """True when the model is over UNLIKE_FACTOR times less sure of this image (``unsure``, its
    proposal's uncertainty) than of any held-out image it was judged on (``val_uncertainty_max``):
    the held-out judgement does not speak for it, and its proposal is withheld. False without the
    numbers (older checkpoints, specs not judged)."""
    if not isinstance(spec, dict) or unsure is None:
        return False
    seen = spec.get("val_uncertainty_max")
    if not isinstance(seen, (int, float)) or isinstance(seen, bool):
        return False
    return float(unsure) > UNLIKE_FACTOR * max(float(seen), UNLIKE_FLOOR)


def withholds_image(spec: dict | None, unsure: float | None) -> bool:
    """Whether the proposal for an image whose uncertainty is ``unsure`` is withheld: the model's
    proposals cost more than drawing on the held-out images (``withholds``), or this image is unlike
    them (``unlike_held_out``)."""
    return withholds(spec) or unlike_held_out(spec, unsure)


def why_unlike(spec: dict, unsure: float) -> str:
    """For the user: why this image's proposal is withheld (after "model N is unsure here: ")."""
    seen = max(float(spec.get("val_uncertainty_max") or 0.0), UNLIKE_FLOOR)
    return f"{unsure / seen:.1f}x less sure than on any held-out image"


def apply(classes: np.ndarray, spec: dict | None, area_factor: float = 1.0, gate: bool = True,
          unsure: float | None = None) -> np.ndarray:
    """``classes`` (H x W, 0 = background, 1..K) after the steps in ``spec`` (None: unchanged);
    all background when the spec withholds this proposal (``withholds_image`` with the image's
    uncertainty ``unsure``; ``gate`` False ignores that). ``area_factor`` converts the spec's areas
    to this array's pixels (scale**2 for a resized one)."""
    if not spec:
        return classes
    if gate and withholds_image(spec, unsure):
        return np.zeros_like(classes)
    if classes.size > MAX_PIXELS and spec.get("classes"):
        log.info("post-processing skipped on a %d x %d proposal (over %d pixels: its components would take "
                 "about 10 bytes a pixel)", classes.shape[1], classes.shape[0], MAX_PIXELS)
        return classes
    for key, steps in (spec.get("classes") or {}).items():
        value = int(key)
        if steps.get("largest_only"):
            classes = keep_largest(classes, value)
        if steps.get("min_area"):
            classes = remove_specks(classes, value, float(steps["min_area"]) * area_factor)
        if steps.get("max_hole"):
            classes = fill_holes(classes, value, float(steps["max_hole"]) * area_factor)
    return classes


# ----- choosing


def _mean_dice(pairs: list[tuple[np.ndarray, np.ndarray]], value: int, transform=None) -> float | None:
    scores = []
    for pred, target in pairs:
        if transform is not None:
            pred = transform(pred)
        d = dice(pred == value, target == value, target != IGNORE)
        if d is not None:
            scores.append(d)
    return float(np.mean(scores)) if scores else None


def _true_sizes(targets: Iterable[np.ndarray], value: int) -> tuple[np.ndarray, np.ndarray]:
    """Areas of the true objects of ``value`` and of the true holes inside them."""
    objects, holes = [], []
    for target in targets:
        mask = target == value
        if not mask.any():
            continue
        _, _, stats = _components(mask, 8)
        objects.extend(stats[1:, cv2.CC_STAT_AREA].tolist())
        n, _, stats = _components(~mask, 4)
        h, w = mask.shape
        for x, y, bw, bh, area in stats[1:n]:
            if x > 0 and y > 0 and x + bw < w and y + bh < h:
                holes.append(area)
    return np.asarray(objects, float), np.asarray(holes, float)


def _speck_candidates(objects: np.ndarray) -> list[float]:
    if objects.size == 0:
        return []
    return sorted({max(2.0, 0.5 * float(np.percentile(objects, 5))), max(2.0, 0.25 * float(np.median(objects)))})


def _hole_candidates(holes: np.ndarray, image_area: float) -> list[float]:
    if holes.size == 0:  # the labels never show a hole: any hole is an error
        return [image_area]
    return [0.5 * float(np.percentile(holes, 5))]


def choose(pairs: list[tuple[np.ndarray, np.ndarray]], n_classes: int, area_scale: float = 1.0,
           uncertainties: list[float] | None = None) -> dict:
    """The post-processing spec that best raises mean Dice on validation ``pairs`` of
    (predicted classes 0..K, target 0..K with -100 = unlabelled), both at one resolution.
    ``area_scale`` converts areas at that resolution to full-resolution pixels (1 / scale**2).
    ``uncertainties``: of every held-out image; their largest is kept (``unlike_held_out``).

    For each class: pick the best of "largest component only" and the speck thresholds if it beats
    no step by MIN_GAIN, then, on top, the hole threshold under the same rule. An empty ``classes`` dict means "leave proposals as
    they are"."""
    spec: dict = {"version": VERSION, "classes": {}, "n_images": len(pairs)}
    if uncertainties:
        spec["val_uncertainty_max"] = round(float(max(uncertainties)), 4)
    if len(pairs) < MIN_IMAGES:
        return spec
    gains = {}
    for value in range(1, n_classes + 1):
        objects, holes = _true_sizes((t for _, t in pairs), value)
        base = _mean_dice(pairs, value)
        if base is None:
            continue
        steps: dict = {}
        best = base
        candidates = [({"largest_only": True}, lambda p: keep_largest(p, value))]  # nnU-Net's own step
        candidates += [({"min_area": a}, lambda p, a=a: remove_specks(p, value, a)) for a in _speck_candidates(objects)]
        for step, transform in candidates:
            score = _mean_dice(pairs, value, transform)
            if score is not None and score > best + MIN_GAIN:
                best, steps = score, dict(step)
        with_specks = best
        image_area = float(max(p.size for p, _ in pairs))
        for area in _hole_candidates(holes, image_area):

            def both(p, a=area):
                if steps.get("largest_only"):
                    p = keep_largest(p, value)
                if "min_area" in steps:
                    p = remove_specks(p, value, steps["min_area"])
                return fill_holes(p, value, a)

            score = _mean_dice(pairs, value, both)
            if score is not None and score > best + MIN_GAIN:
                best, steps["max_hole"] = score, area
        if steps:
            spec["classes"][str(value)] = {k: v if isinstance(v, bool) else round(v * area_scale, 1)
                                           for k, v in steps.items()}
            gains[value] = (round(base, 4), round(with_specks, 4), round(best, 4))
    spec["dice_gain"] = {str(k): v for k, v in gains.items()}
    _gate(spec, pairs, area_scale)
    log.debug("post-processing chosen on %d images: %s", len(pairs), spec)
    return spec


def _gate(spec: dict, pairs: list[tuple[np.ndarray, np.ndarray]], area_scale: float) -> None:
    """Set ``propose``: do the post-processed proposals save correction effort on the held-out
    images (segdesk.core.effort: the new outline the user must draw)? The older region measure's
    ratio is recorded beside it (``val_region_effort_ratio``) but decides nothing."""

    e = s = region_e = region_s = 0.0
    for pred, target in pairs:
        known = target != IGNORE
        truth = np.where(known, target, 0).astype(np.uint8)
        shown = np.where(known, apply(pred, spec, 1.0 / area_scale, gate=False), 0).astype(np.uint8)
        e += fx.effort(shown, truth)
        s += fx.scratch_effort(truth)
        region_e += fx.region_effort(shown, truth)
        region_s += fx.region_scratch_effort(truth)
    if s > 0:
        spec["val_effort_ratio"] = round(e / s, 4)
        spec["val_region_effort_ratio"] = round(region_e / region_s, 4) if region_s > 0 else None
        spec["propose"] = e < MAX_EFFORT_RATIO * s
    else:  # nothing to draw where it was judged: not judged yet
        spec["propose"] = False


def unvalidated(accepted_needed: int) -> dict:
    """The spec for a model with no held-out image to be judged on yet: proposals withheld.

    Measured (docs/benchmarks.md): showing such early proposals cost more than it saved on two of
    the three shared sets (one wrong proposal cost 34x drawing its image), while withholding costs
    at most one drawing per image, and only until the project has ``accepted_needed`` images."""
    return {"version": VERSION, "classes": {}, "n_images": 0, "propose": False, "accepted_needed": accepted_needed}


def why_withheld(spec: dict) -> str:
    """For the user: why a withholding spec shows no proposals (after "model N is still learning: ")."""
    ratio = spec.get("val_effort_ratio")
    if isinstance(ratio, (int, float)):
        return f"correcting its proposals took {ratio:.1f}x the work of drawing on your held-out images"
    if spec.get("n_images"):
        return "the labels it was checked on had nothing to draw where they were held out"
    needed = spec.get("accepted_needed")
    when = ""
    if isinstance(needed, int):
        when = f" (that takes {needed} accepted image{'s' if needed != 1 else ''})"
    return f"it has not been checked on held-out accepted labels yet{when}"
