"""Training and validation data from a project's saved labels.

Training items: accepted images that are not held out, plus "in progress" images with a label
file (corrections: only painted pixels count). Validation: a deterministic part of the accepted
images, chosen by a hash of the image id so an image keeps its role as the project grows. While
the project has too few accepted images to spare a whole one, a part of each is held out instead
(``held_out_part``: a third of it with something to draw), so a model is judged, and its proposals
can be shown, from the second image on.

Images are read lazily and kept, normalised and at working resolution (the planned ``ScaleRule``,
per image), in a small LRU cache bounded in bytes. A changed label file (new modification time) is
read again. Which flips and turns augment the crops is planned from the labels (augment_plan.py).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from segdesk.core.encoding import IGNORE, label_to_target
from segdesk.core.errors import SegdeskError
from segdesk.core.project import STATUS_ACCEPTED, STATUS_IN_PROGRESS, Project
from segdesk.ml.augment_plan import AugmentationPlan, plan_for
from segdesk.ml.normalise import normalise_hwc
from segdesk.ml.planning import ScaleRule, plan_scale_rule, read_fingerprints

log = logging.getLogger(__name__)

HOLD_OUT_EVERY = 5  # about one accepted image in five is held out for validation
MIN_ACCEPTED_FOR_VALIDATION = 3  # whole images held out from here on; parts of images before
PART_FRACTION = 1 / 3  # of an image's longer side held out while no whole image is
# Crops are cut with this much context so rotation and zoom-out rarely need to pad.
_WINDOW_FACTOR = 1.5
# Chance that a crop is centred near labelled pixels (corrected images) or foreground (accepted).
_FOCUS_CORRECTED = 0.9
_FOCUS_ACCEPTED = 1 / 3  # nnU-Net's foreground oversampling
_MAX_COORDS = 4096


def _id_hash(image_id: str) -> int:
    return int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "big")


def held_out_ids(accepted: list[str]) -> list[str]:
    """The accepted images used for validation: those whose id hash is 0 modulo 5 (stable as the
    project grows); at least 1 from 3 accepted on, none below 3. Small projects can draw many by
    chance, so at most a quarter (rounded up) are held out: training data is scarcest then."""
    if len(accepted) < MIN_ACCEPTED_FOR_VALIDATION:
        return []
    ranked = sorted(accepted, key=_id_hash)
    chosen = [i for i in ranked if _id_hash(i) % HOLD_OUT_EVERY == 0] or ranked[:1]
    return chosen[: max(1, math.ceil(len(accepted) / 4))]


def held_out_part(label: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the held-out part of an image with this label (disk encoding), a
    PART_FRACTION band cut off by one straight line, so few objects are split (a split object's cut
    edge counts in the outline to draw, for proposal and scratch alike). The last band along the
    longer side, then the first, then the last and first along the shorter side: the first of
    these with something to draw (a region with none cannot judge a proposal), else the first."""
    h, w = label.shape[:2]
    bh, bw = max(1, round(h * PART_FRACTION)), max(1, round(w * PART_FRACTION))
    along_width = [(0, h, w - bw, w), (0, h, 0, bw)]
    along_height = [(h - bh, h, 0, w), (0, bh, 0, w)]
    bands = along_width + along_height if w >= h else along_height + along_width
    for y0, y1, x0, x1 in bands:
        if (label[y0:y1, x0:x1] >= 2).any():
            return y0, y1, x0, x1
    return bands[0]


@dataclass(frozen=True)
class Item:
    image_id: str
    corrected: bool  # "in progress" image: only painted pixels count
    part: bool = False  # its held-out part (held_out_part) is not trained on


@dataclass
class _Loaded:
    image: np.ndarray  # H x W x 3 float32, normalised, at working resolution
    label: np.ndarray  # H x W uint8 disk encoding, at working resolution
    focus: np.ndarray  # (n, 2) sample of (y, x) to centre crops on; may be empty
    part: tuple[int, int, int, int]  # held_out_part of the label, used while parts are held out

    @property
    def nbytes(self) -> int:
        return self.image.nbytes + self.label.nbytes + self.focus.nbytes


def _cut(array: np.ndarray, y0: int, x0: int, size: int, fill) -> np.ndarray:
    """A size x size window at (y0, x0), padded with ``fill`` where it leaves the array."""
    out = np.full((size, size) + array.shape[2:], fill, dtype=array.dtype)
    h, w = array.shape[:2]
    ys, ye = max(y0, 0), min(y0 + size, h)
    xs, xe = max(x0, 0), min(x0 + size, w)
    if ys < ye and xs < xe:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = array[ys:ye, xs:xe]
    return out


class LabelledSet:
    """Random augmented crops for training and whole images for validation, at working resolution.

    ``working_scale``: a ScaleRule, a number (a fixed scale) or None (planned from the labels);
    ``augmentation``: the flips and turns to use, or None (planned from the labels)."""

    def __init__(
        self,
        project: Project,
        crop_size: int = 256,
        working_scale: ScaleRule | float | None = None,
        cache_bytes: int = 256 << 20,
        augmentation: AugmentationPlan | None = None,
    ):
        self.project = project
        self.crop_size = int(crop_size)
        fingerprints: dict = {}  # read once for both plans
        if working_scale is None:
            working_scale = plan_scale_rule(project, crop_size, fingerprints)
        if not isinstance(working_scale, ScaleRule):
            working_scale = ScaleRule(float(working_scale))
        self.scale_rule = working_scale
        if augmentation is None:
            classes = [c.name for c in project.classes]
            augmentation = plan_for(read_fingerprints(project, fingerprints), classes, project.settings)
        self.augmentation = augmentation
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, int], _Loaded] = OrderedDict()
        self._cached_bytes = 0

        accepted = project.accepted_ids()
        self.validation_ids: list[str] = held_out_ids(accepted)
        # too few accepted images to hold a whole one out: a part of each is held out
        self.part_ids: list[str] = [] if self.validation_ids else list(accepted)
        held = set(self.validation_ids)
        parts = set(self.part_ids)
        self.items: list[Item] = [Item(i, False, i in parts) for i in accepted if i not in held]
        for entry in project.images:
            if entry.status == STATUS_IN_PROGRESS and project.label_path(entry.id).exists():
                self.items.append(Item(entry.id, True))

        window = round(self.crop_size * _WINDOW_FACTOR)
        self._window = window + (window - self.crop_size) % 2  # centre crop lands on whole pixels
        flips = [v2.RandomHorizontalFlip()] if augmentation.flip_lr else []
        flips += [v2.RandomVerticalFlip()] if augmentation.flip_ud else []
        self._geometric = v2.Compose([
            *flips,
            v2.RandomAffine(  # small turns and zooms keep every class's meaning
                degrees=15.0,
                scale=(0.8, 1.25),
                interpolation=v2.InterpolationMode.BILINEAR,  # masks always use nearest
                fill={tv_tensors.Image: 0.0, tv_tensors.Mask: IGNORE},
            ),
            v2.CenterCrop(self.crop_size),
        ])

    # ----- what there is

    @property
    def has_data(self) -> bool:
        return bool(self.items)

    @property
    def has_validation(self) -> bool:
        return bool(self.validation_ids or self.part_ids)

    @property
    def validation_key(self) -> tuple:
        """What the validation is done on: when it changes, Dice figures no longer compare."""
        return tuple(self.validation_ids), tuple(self.part_ids)

    @property
    def n_train_images(self) -> int:
        return len(self.items)

    def __len__(self) -> int:
        return len(self.items)

    # ----- loading

    def _label_stamp(self, image_id: str) -> int | None:
        try:
            return self.project.label_path(image_id).stat().st_mtime_ns
        except OSError:
            return None

    def _load(self, image_id: str, corrected: bool) -> _Loaded | None:
        """The image and label at working scale, or None (logged) when they cannot be read."""
        stamp = self._label_stamp(image_id)
        if stamp is None:
            log.warning("%s has no label file any more; skipped", image_id)
            return None
        key = (image_id, stamp)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            entry = self.project.image(image_id)
            label = self.project.read_label(image_id)
            pixels = self.project.read_image(entry).pixels
        except SegdeskError as exc:
            log.warning("training skips %s: %s", image_id, exc)
            return None
        if label is None:
            log.warning("%s has no label file any more; skipped", image_id)
            return None
        if pixels.shape[:2] != label.shape:
            log.warning("training skips %s: image is %s but label is %s", image_id, pixels.shape[:2], label.shape)
            return None
        loaded = self._prepare(image_id, pixels, label, corrected)
        self._remember(key, loaded)
        return loaded

    def _prepare(self, image_id: str, pixels: np.ndarray, label: np.ndarray, corrected: bool) -> _Loaded:
        image = self.scale_rule.resize(normalise_hwc(pixels))
        label = self.scale_rule.resize(label, nearest=True)
        focus = np.argwhere(label > 0 if corrected else label >= 2)
        if len(focus) > _MAX_COORDS:
            pick = np.random.default_rng(_id_hash(image_id)).choice(len(focus), _MAX_COORDS, replace=False)
            focus = focus[pick]
        return _Loaded(image, label, focus.astype(np.int32), held_out_part(label))

    @property
    def working_scale(self) -> float | None:
        """The fixed scale; None under a per-image rule (see ``scale_rule``)."""
        return None if self.scale_rule.per_image else self.scale_rule.scale

    def adopt_cache(self, other: "LabelledSet") -> None:
        """Reuse another set's loaded images (same project, same scale rule) to avoid re-reading."""
        if other.scale_rule == self.scale_rule and other.project.root == self.project.root:
            self._cache, self._cached_bytes = other._cache, other._cached_bytes
            other._cache, other._cached_bytes = OrderedDict(), 0

    def _remember(self, key: tuple[str, int], loaded: _Loaded) -> None:
        for old in [k for k in self._cache if k[0] == key[0]]:  # an older label of this image
            self._cached_bytes -= self._cache.pop(old).nbytes
        self._cache[key] = loaded
        self._cached_bytes += loaded.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= dropped.nbytes

    # ----- training crops

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented crop: (3 x c x c float32 image, c x c int64 target, -100 = ignore).

        Items that cannot be read are dropped (logged); SegdeskError when none is left.
        """
        while self.items:
            index = int(rng.integers(len(self.items)))
            item = self.items[index]
            loaded = self._load(item.image_id, item.corrected)
            if loaded is not None:
                return self._crop(loaded, item.corrected, rng, item.part)
            del self.items[index]
        raise SegdeskError("There are no readable labelled images to train on yet.")

    def _crop(self, loaded: _Loaded, corrected: bool, rng: np.random.Generator, part: bool = False):
        size = self._window
        h, w = loaded.label.shape
        focus_p = _FOCUS_CORRECTED if corrected else _FOCUS_ACCEPTED
        focus = loaded.focus
        if part:  # crops centre on what may be trained on
            py0, py1, px0, px1 = loaded.part
            inside = (focus[:, 0] >= py0) & (focus[:, 0] < py1) & (focus[:, 1] >= px0) & (focus[:, 1] < px1)
            focus = focus[~inside]
        if len(focus) and rng.random() < focus_p:
            cy, cx = focus[rng.integers(len(focus))]
            jitter = self.crop_size // 4
            y0 = int(cy) - size // 2 + int(rng.integers(-jitter, jitter + 1))
            x0 = int(cx) - size // 2 + int(rng.integers(-jitter, jitter + 1))
        else:  # anywhere, keeping as much image in the window as fits
            y0 = int(rng.integers(min(0, h - size), max(0, h - size) + 1))
            x0 = int(rng.integers(min(0, w - size), max(0, w - size) + 1))
        image = _cut(loaded.image, y0, x0, size, 0.0)
        label = _cut(loaded.label, y0, x0, size, 0)
        if part:  # the held-out part is unlabelled here (its pixels still give context)
            label[max(0, py0 - y0):max(0, py1 - y0), max(0, px0 - x0):max(0, px1 - x0)] = 0
        target = label_to_target(label)

        if self.augmentation.rot90:  # 90-degree turns are exact, so done here rather than resampled
            k = int(rng.integers(4))
            image = np.rot90(image, k, axes=(0, 1))
            target = np.rot90(target, k, axes=(0, 1))
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        target_t = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(target)))
        with torch.random.fork_rng(devices=[]):  # v2 draws from torch's RNG: make it follow ``rng``
            torch.manual_seed(int(rng.integers(2**63 - 1)))
            image_t, target_t = self._geometric(image_t, target_t)

        contrast = rng.uniform(0.75, 1.25)
        brightness = rng.uniform(-0.2, 0.2)  # in standardised units: 0.2 = 5% of the 0.5..99.5% range
        image_t = image_t.as_subclass(torch.Tensor) * contrast + brightness
        return image_t.float().contiguous(), target_t.as_subclass(torch.Tensor).long().contiguous()

    # ----- validation

    def validation_items(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(image id, 3 x H x W float32 input, H x W int64 target) at working resolution; for a
        part-held image the target is unlabelled (-100) outside its held-out part."""
        for image_id in self.validation_ids + self.part_ids:
            loaded = self._load(image_id, corrected=False)
            if loaded is None:
                continue
            target = label_to_target(loaded.label)
            if image_id in self.part_ids:
                y0, y1, x0, x1 = loaded.part
                part = np.full_like(target, IGNORE)
                part[y0:y1, x0:x1] = target[y0:y1, x0:x1]
                target = part
            yield image_id, np.ascontiguousarray(loaded.image.transpose(2, 0, 1)), target


def label_signature(project: Project) -> tuple:
    """What training depends on: each labelled image's status and label file time."""
    signature = []
    for entry in project.images:
        if entry.status not in (STATUS_ACCEPTED, STATUS_IN_PROGRESS):
            continue
        try:
            stamp = project.label_path(entry.id).stat().st_mtime_ns
        except OSError:
            continue
        signature.append((entry.id, entry.status, stamp))
    return tuple(signature)
