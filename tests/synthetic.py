"""Generated images with known masks, for tests without patient data.

Bright discs (class 1) and squares (class 2) on a noisy, slowly varying background.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segdesk.core.project import Project


def make_sample(rng: np.random.Generator, size: int = 64, n_classes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 gray image, uint8 mask with 0 = background, 1..n_classes) of ``size`` x ``size``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    slope = rng.uniform(-0.5, 0.5, size=2)
    background = 60 + 20 * (slope[0] * yy + slope[1] * xx) / size
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, n_classes + 1))
        r = int(rng.integers(max(3, size // 12), max(4, size // 5)))
        cy, cx = (int(v) for v in rng.integers(r, size - r, size=2))
        if cls == 1:
            cv2.circle(mask, (cx, cy), r, cls, thickness=-1)
        else:
            cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), cls, thickness=-1)
    image = background + 110 * (mask > 0) + rng.normal(0, 18, size=(size, size))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_project(
    root: str | Path, n_images: int, size: int = 64, n_classes: int = 1, seed: int = 0, accept: bool = True
) -> tuple[Project, dict[str, np.ndarray]]:
    """A project of generated PNG images (written under ``root/source``), all accepted with their
    true masks when ``accept``. Returns the project and each image id's true mask (0 = background)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    source = root / "source"
    source.mkdir(parents=True, exist_ok=True)
    masks_by_name = {}
    for i in range(n_images):
        image, mask = make_sample(rng, size, n_classes)
        name = f"img{i:03d}.png"
        cv2.imwrite(str(source / name), image)
        masks_by_name[name] = mask
    project = Project.create(root / "project", [f"class{c}" for c in range(1, n_classes + 1)])
    report = project.add_images([source])
    truths = {}
    for entry in report.added:
        mask = masks_by_name[Path(entry.source).name]
        truths[entry.id] = mask
        if accept:
            project.accept(entry.id, mask + 1)
    return project, truths


def make_choice_sample(rng: np.random.Generator, size: int = 64, radius: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Two identical bright discs of which only the first is the class: no model can tell which from
    the image alone, a click can. (uint8 gray image, uint8 mask with 0 = background, 1 = the chosen disc)."""
    image = np.full((size, size), 60, np.float32)
    mask = np.zeros((size, size), np.uint8)
    centres: list[np.ndarray] = []
    while len(centres) < 2:
        centre = rng.integers(radius + 3, size - radius - 3, 2)
        if all(np.hypot(*(centre - other)) > 3 * radius for other in centres):
            centres.append(centre)
    for i, (cy, cx) in enumerate(centres):
        disc = np.zeros_like(mask)
        cv2.circle(disc, (int(cx), int(cy)), radius, 1, thickness=-1)
        image[disc > 0] = 170
        if i == 0:
            mask |= disc
    image += rng.normal(0, 15, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_choice_project(root: str | Path, n_images: int = 10, size: int = 64, seed: int = 0) -> Project:
    """A project of ``make_choice_sample`` images (under ``root/source``), all accepted."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    source = root / "source"
    source.mkdir(parents=True, exist_ok=True)
    masks = {}
    for i in range(n_images):
        image, mask = make_choice_sample(rng, size)
        cv2.imwrite(str(source / f"choice{i:03d}.png"), image)
        masks[f"choice{i:03d}.png"] = mask
    project = Project.create(root / "project", ["disc"])
    for entry in project.add_images([source]).added:
        project.accept(entry.id, masks[Path(entry.source).name] + 1)
    return project
