"""Correction effort and Dice arithmetic (segdesk.core.effort) on hand-made masks.

Contour lengths are OpenCV's: findContours traces the centres of the boundary pixels (8-connected),
arcLength adds 1 per straight step and sqrt(2) per diagonal one. So a filled w x h rectangle
measures 2(w - 1) + 2(h - 1): 36 for a 10 x 10 square (its pixel edges would give 40). The opening
with a disk of radius 1 (the 3 x 3 cross) cuts a rectangle's four corner pixels: each corner's two
unit steps become one diagonal, so a w x h error rectangle measures 2(w - 3) + 2(h - 3) + 4 sqrt(2)
(10 x 10: 4 x 7 + 4 x sqrt(2) = 33.657), traced through 2(w - 2) + 2(h - 2) points.

All images here are 100 x 100 or 200 x 200, so the slack radius t is 1 and a fill click costs 2t = 2,
unless a test says otherwise.
"""

import math
import time

import cv2
import numpy as np
import pytest

from segdesk.core import effort as fx
from segdesk.core.encoding import mean_dice

SQRT2 = math.sqrt(2)


def square(shape=(100, 100), y=20, x=20, size=10, value=1, width=None):
    m = np.zeros(shape, np.uint8)
    m[y:y + size, x:x + (width or size)] = value
    return m


def opened_rectangle(w, h):
    """Outline of a w x h rectangle after the radius-1 opening (corners cut)."""
    return 2 * (w - 3) + 2 * (h - 3) + 4 * SQRT2


def test_slack_radius_is_half_a_percent_of_the_diagonal_at_least_one():
    assert fx.slack_radius((100, 100)) == 1  # 0.005 x 141 = 0.7 -> 1
    assert fx.slack_radius((200, 200)) == 1  # 1.41 -> 1
    assert fx.slack_radius((256, 256)) == 2  # 1.81 -> 2
    assert fx.slack_radius((512, 512)) == 4  # 3.62 -> 4
    assert fx.slack_radius((1000, 1000)) == 7  # 7.07 -> 7
    assert fx.slack_radius((10, 10)) == 1


def test_disk_is_the_pixels_within_the_radius():
    assert fx.disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    d2 = fx.disk(2)
    assert d2.shape == (5, 5) and d2.sum() == 13  # 1 + 4 + 4 (diagonals at 1.41) + 4 (axes at 2)


def test_contour_of_a_square_runs_through_pixel_centres():
    assert fx.contour_length(square()) == pytest.approx(36.0)
    assert fx.contour_length(square(size=1)) == 0.0  # a single pixel has no length
    assert fx.contour_length(np.zeros((5, 5), np.uint8)) == 0.0


def test_proposal_edge_is_both_sides_of_the_boundary_and_never_the_image_border():
    m = np.zeros((7, 7), np.uint8)
    m[2:5, 2:5] = 1
    edge = fx.proposal_edge(m)
    assert edge.sum() == 24 and not edge[3, 3]  # the 5 x 5 block around the square, less its centre
    half = np.zeros((6, 6), np.uint8)
    half[:, :3] = 1
    assert np.flatnonzero(fx.proposal_edge(half).any(axis=0)).tolist() == [2, 3]  # not rows 0 and 5
    assert not fx.proposal_edge(np.ones((4, 4), np.uint8)).any()


# ----- the region measure (the older one): whole outline of the opened P != G


def test_region_effort_of_a_ten_pixel_square_is_its_outline_minus_the_cut_corners():
    truth = square()
    expected = opened_rectangle(10, 10)  # 33.657
    assert fx.region_effort(np.zeros_like(truth), truth) == pytest.approx(expected, abs=1e-4)
    assert fx.region_scratch_effort(truth) == pytest.approx(expected, abs=1e-4)
    assert fx.region_effort(truth, np.zeros_like(truth)) == pytest.approx(expected, abs=1e-4)  # symmetric
    assert fx.region_effort(truth, truth) == 0.0


def test_opening_removes_a_one_pixel_line_but_not_a_thick_one():
    truth = np.zeros((100, 100), np.uint8)
    line = truth.copy()
    line[50, 10:90] = 1
    assert fx.contour_length(line) == pytest.approx(2 * 79)  # there and back along the centres
    assert fx.region_effort(line, truth) == 0.0  # thinner than the slack: left uncorrected
    assert fx.effort(line, truth) == 0.0
    band = truth.copy()
    band[50:53, 10:90] = 1  # 3 px survives the radius-1 opening (ends lose their corners)
    assert fx.region_effort(band, truth) == pytest.approx(opened_rectangle(80, 3), abs=1e-4)
    assert fx.effort(band, truth) == 2.0  # a false island: one click


def test_the_slack_grows_with_the_image():
    """The same 4-px wide error band is slack in a 1000 px image (t = 7) but not at 100 px."""
    small, large = np.zeros((100, 100), np.uint8), np.zeros((1000, 1000), np.uint8)
    small[40:44, 10:90] = 1
    large[400:404, 100:900] = 1
    for measure in (fx.effort, fx.region_effort):
        assert measure(np.zeros_like(small), small) > 0
        assert measure(np.zeros_like(large), large) == 0.0


def test_holes_count_as_outlines_too():
    ring = square(size=50, y=10, x=10)
    ring[30:40, 30:40] = 0  # a 10 x 10 hole
    outer = 4 * 49
    hole = 4 * 9 + 4 * SQRT2  # the hole's outline: the ring pixels around it, corners cut by 8-connectivity
    assert fx.contour_length(ring) == pytest.approx(outer + hole, abs=1e-4)


def test_a_wrong_class_is_an_error_even_where_both_are_foreground():
    truth = square(value=2)
    assert fx.region_effort(square(value=1), truth) == pytest.approx(opened_rectangle(10, 10), abs=1e-4)
    # new measure: class 2 is missed (its whole outline) and class 1 is a false island (one click)
    assert fx.effort(square(value=1), truth) == pytest.approx(opened_rectangle(10, 10) + 2, abs=1e-4)
    assert mean_dice(square(value=1), truth) == 0.0


# ----- the effort measure: the new outline the user must draw


def test_perfect_proposal_costs_nothing_and_empty_costs_the_scratch_effort():
    truth = square() + square(y=60, x=50, size=20, width=10)
    assert fx.effort(truth, truth) == 0.0
    scratch = opened_rectangle(10, 10) + opened_rectangle(10, 20)  # 33.657 + 53.657
    assert fx.scratch_effort(truth) == pytest.approx(scratch, abs=1e-4)
    assert fx.effort(np.zeros_like(truth), truth) == fx.scratch_effort(truth)
    assert fx.scratch_effort(np.zeros_like(truth)) == 0.0


def test_an_offset_edge_is_drawn_once_not_on_both_sides_of_the_gap():
    """Truth: 20 x 20 square at x 20..39; proposal: the same square 3 px to the right (x 23..42).
    The error is two 3 x 20 strips, each opened to a 34 + 4 sqrt(2) = 39.657 outline through 38
    points (top 1, bottom 1, two sides of 18).

    - Missed strip x 20..22: its right side (x 22, 18 points) touches the proposal (x 23), so it is
      proposal edge; the rest is new outline: 39.657 x 20 / 38.
    - False strip x 40..42: its right side (x 42) is the proposal's own boundary column and its top
      and bottom points sit on the proposal's top and bottom rows: 20 edge points; the left side
      (x 40) is new outline, the user's one cut: 39.657 x 18 / 38.

    Together one strip's outline, 39.657: the right edge drawn once. The region measure counts both
    strips whole (79.31), more than drawing the square from scratch (4 x 17 + 4 sqrt(2) = 73.657)."""
    truth = square(size=20)
    proposal = square(size=20, x=23)
    strip = opened_rectangle(3, 20)
    assert strip == pytest.approx(34 + 4 * SQRT2)
    assert fx.effort(proposal, truth) == pytest.approx(strip * 20 / 38 + strip * 18 / 38, abs=1e-4)
    assert fx.effort(proposal, truth) == pytest.approx(strip, abs=1e-4)
    assert fx.region_effort(proposal, truth) == pytest.approx(2 * strip, abs=1e-4)
    assert fx.scratch_effort(truth) == pytest.approx(opened_rectangle(20, 20), abs=1e-4)
    assert fx.region_scratch_effort(truth) == pytest.approx(opened_rectangle(20, 20), abs=1e-4)


def test_a_missed_lobe_costs_its_outline_less_the_side_along_the_proposal():
    """Truth: a disc of radius 40 (centre 100, 100) plus a rectangle protruding right over rows
    102..108; proposal: the disc. On those rows the disc ends at x = 100 + floor(sqrt(1600 - dy^2))
    = 139 (dy = 2..8), so the missed lobe is the 20 x 7 rectangle x 140..159: opened, an outline of
    2 x 17 + 2 x 4 + 4 sqrt(2) = 47.657 through 46 points. Its left side (x 140, rows 103..107,
    5 points) touches the disc: proposal edge. Its top corner point (141, 102) does not: the disc's
    single-pixel tip at (140, 100) is two rows away. So E = 47.657 x 41 / 46."""
    truth = np.zeros((200, 200), np.uint8)
    truth[60:141, 60:141] = fx.disk(40)
    proposal = truth.copy()
    truth[102:109, 120:160] = 1
    lobe = opened_rectangle(20, 7)
    assert fx.effort(proposal, truth) == pytest.approx(lobe * 41 / 46, abs=1e-4)  # 42.477
    assert fx.region_effort(proposal, truth) == pytest.approx(lobe, abs=1e-4)


def test_a_false_island_costs_one_click():
    """Its whole outline is the proposal's edge: nothing to draw, one click (2t) to erase it."""
    truth = square()
    proposal = truth.copy()
    proposal[60:70, 60:70] = 1
    assert fx.effort(proposal, truth) == 2.0
    assert fx.region_effort(proposal, truth) == pytest.approx(opened_rectangle(10, 10), abs=1e-4)
    big = np.zeros((1000, 1000), np.uint8)  # t = 7: the click costs 14
    big[100:141, 100:141] = fx.disk(20)
    assert fx.effort(big, np.zeros_like(big)) == 14.0
    # A square island's corners are rounded by the radius-7 opening up to 7 (sqrt(2) - 1) = 2.9 px
    # inside the proposal, off its 3 x 3 edge band, so those arcs count as outline to draw.
    corners = np.zeros((1000, 1000), np.uint8)
    corners[100:140, 100:140] = 1
    assert 14.0 < fx.effort(corners, np.zeros_like(corners)) < 0.25 * fx.region_effort(corners, np.zeros_like(corners))


def test_a_hole_in_the_proposal_costs_one_click():
    """A 10 x 10 hole inside a 30 x 30 truth object: its outline is all proposal edge; one fill click."""
    truth = square(size=30)
    proposal = truth.copy()
    proposal[30:40, 30:40] = 0
    assert fx.effort(proposal, truth) == 2.0
    assert fx.region_effort(proposal, truth) == pytest.approx(opened_rectangle(10, 10), abs=1e-4)


def test_two_swapped_classes_are_redrawn_each_in_its_own_class():
    """Objects A (class 1) and B (class 2) proposed as each other's class. Per class, the truth's
    object is missed (whole outline: the proposal's edge of *that* class is elsewhere) and the
    proposal's object is a false island (one click): 2 x (33.657 + 2). The region measure sees one
    error region, the two squares: 2 x 33.657, the scratch effort."""
    truth = square(value=1) + square(y=60, x=60, value=2)
    proposal = square(value=2) + square(y=60, x=60, value=1)
    one = opened_rectangle(10, 10)
    assert fx.effort(proposal, truth) == pytest.approx(2 * (one + 2), abs=1e-4)  # 71.314
    assert fx.region_effort(proposal, truth) == pytest.approx(2 * one, abs=1e-4)  # 67.314
    assert fx.scratch_effort(truth) == pytest.approx(2 * one, abs=1e-4)


def test_masks_of_any_integer_type_are_measured_alike():
    truth = square(size=20)
    proposal = square(size=20, x=23)
    assert fx.effort(proposal.astype(np.int64), truth.astype(np.int64)) == pytest.approx(fx.effort(proposal, truth))


def test_a_large_mask_with_hundreds_of_objects_is_quick():
    """Work per component is done in its bounding box, never on full-image arrays: a 2000 x 2000
    mask with 800 discs in two classes took 0.3-0.6 s on a busy 2-core box (bound loose for shared CI)."""
    rng = np.random.default_rng(0)
    truth, proposal = np.zeros((2000, 2000), np.uint8), np.zeros((2000, 2000), np.uint8)
    for mask in (truth, proposal):
        for _ in range(400):
            y, x = rng.integers(20, 1980, 2)
            cv2.circle(mask, (int(x), int(y)), int(rng.integers(8, 25)), int(rng.integers(1, 3)), -1)
    start = time.perf_counter()
    e = fx.effort(proposal, truth)
    assert 0 < e and time.perf_counter() - start < 2.0


def test_dice_is_averaged_over_the_classes_present():
    truth = square(value=1) + square(y=60, x=60, value=2)
    assert mean_dice(truth, truth) == 1.0
    half = truth.copy()
    half[60:70, 65:70] = 0  # class 2 loses half its pixels: 2 x 50 / (50 + 100) = 2/3
    assert mean_dice(half, truth) == pytest.approx((1.0 + 2 / 3) / 2)
    extra = truth.copy()
    extra[0:5, 0:5] = 3  # a class the truth lacks scores 0 and counts in the mean
    assert mean_dice(extra, truth) == pytest.approx(2 / 3)
    empty = np.zeros_like(truth)
    assert mean_dice(empty, truth) == 0.0
    assert mean_dice(empty, empty) == 1.0  # nothing to find, nothing found


def test_mismatched_shapes_are_refused():
    for measure in (fx.effort, fx.region_effort):
        with pytest.raises(ValueError, match="same size"):
            measure(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
