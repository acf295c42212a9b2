"""Correction effort and Dice of a proposal against the true mask (DESIGN.md "Measuring").

numpy and OpenCV only, so the figures can be computed anywhere, without torch or Qt.

Masks here use the export encoding: 0 = background, 1..K = classes, one uint8 array at the image's
own resolution.

Effort E(P, G) is the total contour length of the error region ``P != G`` after a morphological
opening with a disk of radius t = max(1, round(0.005 x image diagonal)) pixels: the opening removes
error slivers thinner than the disk (the boundary slack a clinician leaves uncorrected), and the
remaining outline is what they would have to redraw. Scratch effort S(G) = E(empty, G).

Contour length, concretely: ``cv2.findContours`` with ``RETR_LIST`` (outer outlines and the outlines
of holes, all counted) and ``CHAIN_APPROX_NONE``, then ``cv2.arcLength(closed=True)`` per contour,
summed. OpenCV traces the centres of the region's boundary pixels, 8-connected, so a straight step
is 1 and a diagonal step sqrt(2): a filled w x h rectangle measures 2(w - 1) + 2(h - 1) (a 10 x 10
square: 36, not the 40 of its pixel edges), and a single pixel 0. The opening (radius 1 is the
3 x 3 cross) also cuts a rectangle's four corner pixels, so a 10 x 10 error square counts
4 x 7 + 4 x sqrt(2) = 33.66 px.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SLACK_FRACTION = 0.005  # of the image diagonal


def slack_radius(shape: tuple[int, ...]) -> int:
    """t = max(1, round(0.005 x diagonal)) for an image of ``shape`` (height, width, ...)."""
    h, w = shape[:2]
    return max(1, round(SLACK_FRACTION * math.hypot(h, w)))


def disk(radius: int) -> np.ndarray:
    """Structuring element: the pixels within ``radius`` of the centre (x^2 + y^2 <= r^2)."""
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return ((x * x + y * y) <= r * r).astype(np.uint8)


def opened_error(proposal: np.ndarray, truth: np.ndarray, radius: int | None = None) -> np.ndarray:
    """The error region P != G (uint8 0/1) after an opening with a disk of ``radius``
    (default: the slack radius of the image)."""
    _check_pair(proposal, truth)
    error = (proposal != truth).astype(np.uint8)
    r = slack_radius(truth.shape) if radius is None else int(radius)
    if r <= 0 or not error.any():
        return error
    return cv2.morphologyEx(error, cv2.MORPH_OPEN, disk(r), borderType=cv2.BORDER_CONSTANT, borderValue=0)


def contour_length(region: np.ndarray) -> float:
    """Total length (pixels) of the outlines of a binary region: outer outlines and holes."""
    region = np.ascontiguousarray(region != 0, dtype=np.uint8)
    if not region.any():
        return 0.0
    contours, _ = cv2.findContours(region, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return float(sum(cv2.arcLength(c, True) for c in contours))


def effort(proposal: np.ndarray, truth: np.ndarray, radius: int | None = None) -> float:
    """E(P, G): contour length of the opened error region."""
    return contour_length(opened_error(proposal, truth, radius))


def scratch_effort(truth: np.ndarray, radius: int | None = None) -> float:
    """S(G) = E(empty, G): the effort of drawing the mask from nothing."""
    return effort(np.zeros_like(truth), truth, radius)


def dice(proposal: np.ndarray, truth: np.ndarray) -> float:
    """Dice of P against G, averaged over the classes present in G or in P (a class P invents
    scores 0). 1.0 when neither has any foreground: the empty proposal was right."""
    _check_pair(proposal, truth)
    classes = sorted((set(np.unique(truth).tolist()) | set(np.unique(proposal).tolist())) - {0})
    if not classes:
        return 1.0
    scores = []
    for c in classes:
        p, g = proposal == c, truth == c
        scores.append(2.0 * float(np.count_nonzero(p & g)) / float(np.count_nonzero(p) + np.count_nonzero(g)))
    return float(np.mean(scores))


def _check_pair(proposal: np.ndarray, truth: np.ndarray) -> None:
    if proposal.shape != truth.shape or proposal.ndim != 2:
        raise ValueError(
            f"Proposal and truth must be 2D masks of the same size, got {proposal.shape} and {truth.shape}."
        )
