"""Generated benchmark sets for what the shared ones lack: classes that differ only by side, and
images of many sizes. numpy + OpenCV only; written in seconds, never committed.

- **left-right**: two classes that are mirror images of each other, as left and right lung: a
  lung-like shape (rounded outside, flat inner side with a notch) on the left half is class 1, the
  same shape mirrored onto the right half is class 2. Flipping such an image left-right turns one
  class into the other.
- **mixed-size**: the same kind of scene drawn at shorter sides from 256 to 2,048 px, as when one
  folder gathers images from several scanners and exports: blobs (class 1) and unlabelled
  vessel-like lines as bright as them, with sizes, grain and blur in proportion to the image, so a
  model that sees an image at the wrong scale takes a thick line for a blob.

A set is a folder with ``images/`` and ``masks/`` (same stems; masks 0 = background, 1..K = class),
as ``segdesk bench loop --data`` reads::

    python -m segdesk.bench.synthetic_sets OUT_DIR --kind left-right --n 30 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

KINDS = ("left-right", "mixed-size")
MIXED_SIDES = (256, 2048)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random shading (the same look at any size: drawn coarse, then enlarged)."""
    coarse = rng.normal(0, 1, (8, 8)).astype(np.float32)
    shading = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return 70 + 8 * shading


def _finish(rng: np.random.Generator, image: np.ndarray, grain: float, noise: float) -> np.ndarray:
    """Noise with grains of ``grain`` px, then a blur of the same size: an image drawn at a larger
    side looks, once shrunk to the smaller one, like the one drawn there."""
    height, width = image.shape
    grain = max(1.0, grain)
    coarse = rng.normal(0, noise, (max(1, round(height / grain)), max(1, round(width / grain)))).astype(np.float32)
    image = image + cv2.resize(coarse, (width, height), interpolation=cv2.INTER_NEAREST)
    image = cv2.GaussianBlur(image, (0, 0), grain)
    return np.clip(image, 0, 255).astype(np.uint8)


def _lung(rng: np.random.Generator, size: int) -> np.ndarray:
    """(n, 2) polygon (x, y) of a left-side lung-like shape in an image of ``size`` px: rounded on
    the outside, a flat inner side with a notch low on it, so its mirror image is a different shape."""
    cx = size * rng.uniform(0.25, 0.31)
    cy = size * rng.uniform(0.45, 0.55)
    rx, ry = size * rng.uniform(0.13, 0.17), size * rng.uniform(0.28, 0.34)
    inner = cx + 0.55 * rx  # the flat side, towards the midline
    t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    wobble = 1 + 0.05 * np.sin(3 * t + rng.uniform(0, 2 * math.pi))
    x = cx + rx * np.cos(t) * wobble
    y = cy + ry * np.sin(t) * wobble
    notch = np.clip(1 - np.abs(y - (cy + 0.45 * ry)) / (0.3 * ry), 0, 1)  # the heart's notch
    x = np.minimum(x, inner - 0.5 * rx * notch)
    return np.stack([x, y], axis=1)


def left_right_sample(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 gray image, uint8 mask: 1 = left shape, 2 = its mirror image on the right)."""
    polygon = _lung(rng, size)
    mirrored = polygon.copy()
    mirrored[:, 0] = size - 1 - mirrored[:, 0]
    mirrored[:, 1] += size * rng.uniform(-0.03, 0.03)  # not a pixel-exact copy
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    cv2.fillPoly(mask, [np.round(mirrored).astype(np.int32)], 2)
    image = _background(rng, size, size) + rng.uniform(70, 100) * (mask > 0)
    return _finish(rng, image, grain=size / 256, noise=36), mask


def scene_sample(rng: np.random.Generator, side: int, aspect: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 gray image, uint8 mask 0/1) of one to three irregular blobs (class 1) and one or two
    unlabelled vessel-like lines as bright as them, told apart by shape and size only. Sizes,
    positions and blur are fractions of the image, so the same ``rng`` state draws the same scene
    at any ``side`` (the shorter side; the other is ``aspect`` times it): a model that sees an image
    at the wrong scale takes a thick line for a blob."""
    height, width = side, max(side, round(side * aspect))
    scale = np.array([width, height], np.float64)
    blobs = []
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(0.06, 0.14)
        cy, cx = rng.uniform(r + 0.05, 1 - r - 0.05), rng.uniform(r + 0.05, 1 - r - 0.05)
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        radius = r * (1 + 0.2 * np.sin(2 * t + rng.uniform(0, 6.3)) + 0.1 * np.sin(5 * t + rng.uniform(0, 6.3)))
        blobs.append(np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t) * width / height], axis=1))
    lines = [(rng.uniform(0, 1, (4, 2)), rng.uniform(0.015, 0.03)) for _ in range(int(rng.integers(1, 3)))]
    contrast = rng.uniform(70, 100)
    mask = np.zeros((height, width), np.uint8)
    for blob in blobs:
        cv2.fillPoly(mask, [np.round(blob * scale).astype(np.int32)], 1)
    bright = mask.copy()
    for points, thickness in lines:
        cv2.polylines(bright, [np.round(points * scale).astype(np.int32)], False, 1,
                      thickness=max(1, round(thickness * side)), lineType=cv2.LINE_AA)
    image = _background(rng, height, width) + contrast * (bright > 0)
    return _finish(rng, image, grain=side / 256, noise=30), mask


def mixed_size_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A scene at a shorter side drawn log-uniformly from 256 to 2,048 px, aspect 1 to 4:3."""
    low, high = (math.log(s) for s in MIXED_SIDES)
    side = int(round(math.exp(rng.uniform(low, high))))
    return scene_sample(rng, side, aspect=rng.uniform(1.0, 4 / 3))


def write_set(out: str | Path, kind: str, n: int = 30, seed: int = 0) -> Path:
    """Write ``n`` pairs of ``kind`` under ``out``/images and ``out``/masks; returns ``out``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, mask = left_right_sample(rng) if kind == "left-right" else mixed_size_sample(rng)
        stem = f"{kind}-{i:03d}"
        cv2.imwrite(str(out / "images" / f"{stem}.png"), image)
        cv2.imwrite(str(out / "masks" / f"{stem}.png"), mask)
    log.info("wrote %d %s pairs to %s", n, kind, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segdesk.bench.synthetic_sets",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", metavar="OUT_DIR", help="folder to write images/ and masks/ into")
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--n", type=int, default=30, help="number of images (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_set(args.out, args.kind, args.n, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
