"""Correction effort and Dice of a proposal against the true mask (DESIGN.md "Measuring").

numpy and OpenCV only, so the figures can be computed anywhere, without torch or Qt. Masks use
the export encoding: 0 = background, 1..K = classes, one uint8 array at the image's own resolution.

Both measures first drop the boundary slack a clinician leaves uncorrected: a morphological
opening with a disk of radius t = max(1, round(0.005 x image diagonal)) pixels.

**Effort** E(P, G), the new outline the user must draw. For each class c, the error region
P_c xor G_c is opened; each 8-connected component of it costs the length of its outlines that is
not already an edge of the proposal: every outline's length times the share of its points off
P_c's edge (a pixel is on the edge when its 3 x 3 neighbourhood holds pixels both in and out of
P_c; outside the image counts as neither). A wrong edge is fixed by drawing the right one once.
Every component costs at least one fill click, priced 2t (a false island, or a hole whose whole
outline is proposal edge, costs just that), and at most its whole outline. Scratch effort
S(G) = E(empty, G): the outline length of G's objects, per class.

**Region effort**, the older measure (runs before it stay comparable): the whole outline of the
opened region P != G, all classes as one region, so a boundary offset counts on both sides of
the gap. Region scratch effort = region effort of the empty proposal.

Outlines, concretely: ``cv2.findContours`` with ``RETR_LIST`` (outer outlines and the outlines
of holes) and ``CHAIN_APPROX_NONE``, then ``cv2.arcLength(closed=True)``. OpenCV traces the
centres of the boundary pixels, 8-connected, so a straight step is 1 and a diagonal step
sqrt(2): a filled w x h rectangle measures 2(w - 1) + 2(h - 1) (a 10 x 10 square: 36, not the 40
of its pixel edges), and a single pixel 0. The opening (radius 1 is the 3 x 3 cross) also cuts a
rectangle's four corner pixels, so a 10 x 10 error square measures 4 x 7 + 4 x sqrt(2) = 33.66.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SLACK_FRACTION = 0.005  # of the image diagonal
_SQUARE3 = np.ones((3, 3), np.uint8)


def slack_radius(shape: tuple[int, ...]) -> int:
    """t = max(1, round(0.005 x diagonal)) for an image of ``shape`` (height, width, ...)."""
    h, w = shape[:2]
    return max(1, round(SLACK_FRACTION * math.hypot(h, w)))


def disk(radius: int) -> np.ndarray:
    """Structuring element: the pixels within ``radius`` of the centre (x^2 + y^2 <= r^2)."""
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return ((x * x + y * y) <= r * r).astype(np.uint8)


def _radius(shape: tuple[int, ...], radius: int | None) -> int:
    return slack_radius(shape) if radius is None else int(radius)


def _open(region: np.ndarray, radius: int) -> np.ndarray:
    """``region`` (uint8 0/1) opened with a disk of ``radius``; unchanged for radius 0."""
    if radius <= 0 or not region.any():
        return region
    return cv2.morphologyEx(region, cv2.MORPH_OPEN, disk(radius), borderType=cv2.BORDER_CONSTANT, borderValue=0)


def opened_error(proposal: np.ndarray, truth: np.ndarray, radius: int | None = None) -> np.ndarray:
    """The error region P != G (uint8 0/1, all classes as one region) after an opening with a
    disk of ``radius`` (default: the slack radius of the image)."""
    _check_pair(proposal, truth)
    return _open((proposal != truth).astype(np.uint8), _radius(truth.shape, radius))


def contour_length(region: np.ndarray) -> float:
    """Total length (pixels) of the outlines of a binary region: outer outlines and holes."""
    region = np.ascontiguousarray(region != 0, dtype=np.uint8)
    if not region.any():
        return 0.0
    contours, _ = cv2.findContours(region, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return float(sum(cv2.arcLength(c, True) for c in contours))


def proposal_edge(mask: np.ndarray) -> np.ndarray:
    """Boolean: pixels whose 3 x 3 neighbourhood holds pixels both in and out of ``mask``
    (outside the image counts as neither, so the image border is no edge by itself)."""
    m = np.ascontiguousarray(mask != 0, dtype=np.uint8)
    grown = cv2.dilate(m, _SQUARE3, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    shrunk = cv2.erode(m, _SQUARE3, borderType=cv2.BORDER_CONSTANT, borderValue=1)
    return grown != shrunk


def new_outline(error: np.ndarray, edge: np.ndarray, click: float) -> float:
    """Sum over the 8-connected components of ``error`` (uint8 0/1) of the length of their
    outlines off ``edge`` (boolean, same shape), each component clamped to [click, its whole
    outline]. Each component is traced in its own bounding box."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(error, connectivity=8)
    total = 0.0
    for i in range(1, n):
        x, y, w, h = (int(v) for v in stats[i, :4])
        component = (labels[y : y + h, x : x + w] == i).astype(np.uint8)
        contours, _ = cv2.findContours(component, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE, offset=(x, y))
        whole = new = 0.0
        for contour in contours:
            points = contour[:, 0, :]  # (x, y) in image coordinates
            length = cv2.arcLength(contour, True)
            off_edge = np.count_nonzero(~edge[points[:, 1], points[:, 0]])
            whole += length
            new += length * off_edge / len(points)
        total += min(whole, max(new, click))
    return float(total)


def _classes(*masks: np.ndarray) -> list[int]:
    """The classes (non-zero values) present in any of ``masks``."""
    if all(m.dtype == np.uint8 for m in masks):  # bincount: far quicker than sorting for np.unique
        counts = sum(np.bincount(m.ravel(), minlength=256) for m in masks)
        return [int(c) for c in np.flatnonzero(counts[1:]) + 1]
    return sorted(set().union(*(np.unique(m).tolist() for m in masks)) - {0})


def effort(proposal: np.ndarray, truth: np.ndarray, radius: int | None = None) -> float:
    """E(P, G): the new outline the user must draw, summed over classes (module docstring)."""
    _check_pair(proposal, truth)
    r = _radius(truth.shape, radius)
    total = 0.0
    for c in _classes(proposal, truth):
        p = proposal == c
        error = _open((p != (truth == c)).astype(np.uint8), r)
        if error.any():
            edge = proposal_edge(p) if p.any() else np.zeros(p.shape, bool)
            total += new_outline(error, edge, click=2.0 * r)
    return float(total)


def scratch_effort(truth: np.ndarray, radius: int | None = None) -> float:
    """S(G) = E(empty, G): the effort of drawing the mask from nothing."""
    return effort(np.zeros_like(truth), truth, radius)


def region_effort(proposal: np.ndarray, truth: np.ndarray, radius: int | None = None) -> float:
    """The older measure: whole outline of the opened error region P != G."""
    return contour_length(opened_error(proposal, truth, radius))


def region_scratch_effort(truth: np.ndarray, radius: int | None = None) -> float:
    """Region effort of the empty proposal."""
    return region_effort(np.zeros_like(truth), truth, radius)


def _check_pair(proposal: np.ndarray, truth: np.ndarray) -> None:
    if proposal.shape != truth.shape or proposal.ndim != 2:
        raise ValueError(
            f"Proposal and truth must be 2D masks of the same size, got {proposal.shape} and {truth.shape}."
        )
