"""Which flips and turns training may use, planned from the accepted labels (as nnU-Net plans).

A flip or turn is used only where it keeps what each class means: flipping a chest X-ray left-right
makes the left lung look like a right lung, and turning an ultrasound image puts the probe at the
side. From each label's fingerprint (planning.py: where each class's pixels are centred, as
fractions of the image width and height) two statistics are read, per axis:

- a class **sits on one side**: its centre lies on the same side of the midline in at least
  CONSISTENT_SHARE (80%) of the images that show it, and on average at least SIDE_OFFSET (0.1 of the
  image) away from the midline;
- two classes **keep an order**: one lies left of (or above) the other in at least 80% of the
  images showing both, on average by at least ORDER_GAP (0.1 of the image). Mirror-image classes
  (left and right lung, kidney, hemisphere) show both statistics.

Either one along x forbids the left-right flip; along y the up-down flip. Objects found everywhere
(nuclei, membranes, polyps anywhere in the view) centre near the middle or on random sides, so
every flip stays. A 90-degree turn (and so any large rotation) is used only when both flips are: a
half turn is both flips at once, and a quarter turn puts left at the top. Small rotations (15
degrees), zoom and intensity changes keep every meaning and are always used. With few labels the
shares rest on few images, so a flip is dropped on little evidence: a needless flip-less start
costs some augmentation, a wrong flip costs the classes their meaning.

``project.settings["augmentation"]`` (``{"flip_lr": bool, "flip_ud": bool, "rot90": bool}``, any
subset) overrides the plan per project; a training option (``TrainConfig.augmentation``, ``segdesk
train --augment flip-ud,rot90``, ``bench loop --set augmentation=all``) overrides both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np

from segdesk.ml.planning import Fingerprint

log = logging.getLogger(__name__)

SIDE_OFFSET = 0.1
ORDER_GAP = 0.1
CONSISTENT_SHARE = 0.8
KEYS = ("flip_lr", "flip_ud", "rot90")
PLANNED = "planned from the labels"
SETTING = "project setting"
OPTION = "training option"
_AXES = (("flip_lr", 1, ("left", "right"), ("left of", "right of")),
         ("flip_ud", 0, ("top", "bottom"), ("above", "below")))


@dataclass(frozen=True)
class AugmentationPlan:
    """The flips and turns training uses, why any is left out, and who decided."""

    flip_lr: bool = True
    flip_ud: bool = True
    rot90: bool = True
    reasons: tuple[str, ...] = ()  # why a flip or turn is left out, for people
    source: str = PLANNED

    def to_meta(self) -> dict:
        return {"flip_lr": self.flip_lr, "flip_ud": self.flip_ud, "rot90": self.rot90,
                "reasons": list(self.reasons), "source": self.source}

    @classmethod
    def from_meta(cls, meta: dict | None) -> "AugmentationPlan":
        """The plan a checkpoint recorded; checkpoints from before plans used every flip and turn."""
        if not isinstance(meta, dict):
            return cls(source="before planning")
        values = {k: meta[k] for k in KEYS if isinstance(meta.get(k), bool)}
        raw = meta.get("reasons")
        reasons = tuple(r for r in raw if isinstance(r, str)) if isinstance(raw, list) else ()
        return cls(**values, reasons=reasons, source=str(meta.get("source") or PLANNED))

    def describe(self) -> str:
        """One line for the Training panel, e.g. "flip up-down; no left-right flip or 90° turns
        (class 'left' sits on the left in 9 of 10 images)"."""
        names = {"flip_lr": "left-right", "flip_ud": "up-down", "rot90": "90° turns"}
        used = [names[k] for k in KEYS if getattr(self, k)]
        unused = [names[k] for k in KEYS if not getattr(self, k)]
        if not unused:
            text = "flips left-right, up-down, 90° turns"
        elif not used:
            text = "no flips or turns"
        else:
            flips = [n for n in used if n != "90° turns"]
            text = ("flip " + ", ".join(flips) + ("; 90° turns" if self.rot90 else "")) if flips else "90° turns"
            text += "; no " + " or ".join(n if n == "90° turns" else f"{n} flip" for n in unused)
        if self.source != PLANNED:
            return f"{text} ({self.source})"
        return f"{text} ({self.reasons[0]})" if self.reasons else text


def _consistent(values: list[float], threshold: float) -> tuple[float, int] | None:
    """(mean, how many agree in sign with it) when the values sit consistently on one side of 0."""
    if not values:
        return None
    mean = float(np.mean(values))
    agree = sum(1 for v in values if v * mean > 0)
    if abs(mean) >= threshold and agree >= CONSISTENT_SHARE * len(values):
        return mean, agree
    return None


def _axis_reasons(fingerprints: list[Fingerprint], axis: int, sides, orders, names: dict[int, str]) -> list[str]:
    classes = sorted({c for f in fingerprints for c in f.centroids})
    reasons = []
    for c in classes:
        offsets = [f.centroids[c][axis] - 0.5 for f in fingerprints if c in f.centroids]
        found = _consistent(offsets, SIDE_OFFSET)
        if found:
            side = sides[0] if found[0] < 0 else sides[1]
            reasons.append(f"class '{names.get(c, c)}' sits {'on the' if axis else 'at the'} {side} "
                           f"in {found[1]} of {len(offsets)} images")
    for a, b in combinations(classes, 2):
        gaps = [f.centroids[a][axis] - f.centroids[b][axis] for f in fingerprints
                if a in f.centroids and b in f.centroids]
        found = _consistent(gaps, ORDER_GAP)
        if found:
            order = orders[0] if found[0] < 0 else orders[1]
            reasons.append(f"'{names.get(a, a)}' lies {order} '{names.get(b, b)}' "
                           f"in {found[1]} of {len(gaps)} images")
    return reasons


def plan_augmentation(fingerprints: list[Fingerprint], class_names: list[str] | None = None) -> AugmentationPlan:
    """The flips and turns that keep every class's meaning in these labels (module docstring)."""
    names = {i + 1: n for i, n in enumerate(class_names or [])}
    allowed: dict[str, bool] = {}
    reasons: list[str] = []
    for key, axis, sides, orders in _AXES:
        found = _axis_reasons(fingerprints, axis, sides, orders, names)
        allowed[key] = not found
        reasons += found
    allowed["rot90"] = allowed["flip_lr"] and allowed["flip_ud"]
    plan = AugmentationPlan(**allowed, reasons=tuple(reasons))
    log.debug("augmentation planned: %s", plan.describe())
    return plan


def parse_choice(text: str) -> dict[str, bool]:
    """The flips and turns named in ``text`` on, the others off: "flip-lr,rot90", "all", or "off"
    (also "none"). ValueError for anything else."""
    names = [n.strip().lower().replace("-", "_") for n in text.split(",") if n.strip()]
    if names == ["all"]:
        names = list(KEYS)
    elif names in (["off"], ["none"]):
        names = []
    elif not names or any(n not in KEYS for n in names):
        raise ValueError(f"{text!r} is not a comma list of flip-lr, flip-ud, rot90, or all, or off")
    return {key: key in names for key in KEYS}


def checked_override(value, where: str) -> dict[str, bool] | None:
    """The usable part of an override ({"flip_lr": bool, ...}, or text for ``parse_choice``); bad
    entries are logged and dropped."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_choice(value)
        except ValueError as exc:
            log.warning("ignoring %s: %s", where, exc)
            return None
    if not isinstance(value, dict):
        log.warning("ignoring %s %r: it must map flip_lr, flip_ud, rot90 to true or false", where, value)
        return None
    usable = {k: v for k, v in value.items() if k in KEYS and isinstance(v, bool)}
    if len(usable) != len(value):
        log.warning("ignoring part of %s %r: only flip_lr, flip_ud, rot90 = true/false count", where, value)
    return usable or None


def with_override(plan: AugmentationPlan, override: dict[str, bool] | None, source: str) -> AugmentationPlan:
    """``plan`` with the overridden flips and turns, marked as set by ``source``."""
    if not override:
        return plan
    return replace(plan, **override, source=source)


def plan_for(fingerprints: list[Fingerprint], class_names: list[str], settings: dict,
             option: dict | None = None) -> AugmentationPlan:
    """The plan training uses: planned, then the project setting, then the training option."""
    plan = plan_augmentation(fingerprints, class_names)
    plan = with_override(plan, checked_override(settings.get("augmentation"), "augmentation setting"), SETTING)
    return with_override(plan, checked_override(option, "augmentation option"), OPTION)
