"""Correction effort and Dice arithmetic (segdesk.bench.effort) on hand-made masks.

Contour lengths are OpenCV's: findContours traces the centres of the boundary pixels (8-connected),
arcLength adds 1 per straight step and sqrt(2) per diagonal one. So a filled w x h rectangle
measures 2(w - 1) + 2(h - 1): 36 for a 10 x 10 square (its pixel edges would give 40). The opening
with a disk of radius 1 (the 3 x 3 cross) cuts the square's four corner pixels, leaving sides of 7
and four diagonal steps: 4 x 7 + 4 x sqrt(2) = 33.657.
"""

import math

import numpy as np
import pytest

from segdesk.bench import effort as fx

SQRT2 = math.sqrt(2)


def square(shape=(100, 100), y=20, x=20, size=10, value=1):
    m = np.zeros(shape, np.uint8)
    m[y:y + size, x:x + size] = value
    return m


def test_slack_radius_is_half_a_percent_of_the_diagonal_at_least_one():
    assert fx.slack_radius((100, 100)) == 1  # 0.005 x 141 = 0.7 -> 1
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


def test_ten_pixel_square_error_costs_its_outline_minus_the_cut_corners():
    truth = square()
    expected = 4 * 7 + 4 * SQRT2  # 33.657
    assert fx.effort(np.zeros_like(truth), truth) == pytest.approx(expected, abs=1e-4)
    assert fx.scratch_effort(truth) == pytest.approx(expected, abs=1e-4)
    assert fx.effort(truth, np.zeros_like(truth)) == pytest.approx(expected, abs=1e-4)  # symmetric
    assert fx.effort(truth, truth) == 0.0


def test_opening_removes_a_one_pixel_line_but_not_a_thick_one():
    truth = np.zeros((100, 100), np.uint8)
    line = truth.copy()
    line[50, 10:90] = 1
    assert fx.contour_length(line) == pytest.approx(2 * 79)  # there and back along the centres
    assert fx.effort(line, truth) == 0.0  # thinner than the slack: left uncorrected
    band = truth.copy()
    band[50:53, 10:90] = 1  # 3 px survives the radius-1 opening (ends lose their corners)
    assert fx.effort(band, truth) == pytest.approx(2 * 77 + 2 * 0 + 4 * SQRT2, abs=1e-4)


def test_the_slack_grows_with_the_image():
    """The same 4-px wide error band is slack in a 1000 px image (t = 7) but not at 100 px."""
    small, large = np.zeros((100, 100), np.uint8), np.zeros((1000, 1000), np.uint8)
    small[40:44, 10:90] = 1
    large[400:404, 100:900] = 1
    assert fx.effort(small, np.zeros_like(small)) > 0
    assert fx.effort(large, np.zeros_like(large)) == 0.0


def test_holes_count_as_outlines_too():
    ring = square(size=50, y=10, x=10)
    ring[30:40, 30:40] = 0  # a 10 x 10 hole
    outer = 4 * 49
    hole = 4 * 9 + 4 * SQRT2  # the hole's outline: the ring pixels around it, corners cut by 8-connectivity
    assert fx.contour_length(ring) == pytest.approx(outer + hole, abs=1e-4)


def test_a_wrong_class_is_an_error_even_where_both_are_foreground():
    truth = square(value=2)
    assert fx.effort(square(value=1), truth) == pytest.approx(4 * 7 + 4 * SQRT2, abs=1e-4)
    assert fx.dice(square(value=1), truth) == 0.0


def test_dice_is_averaged_over_the_classes_present():
    truth = square(value=1) + square(y=60, x=60, value=2)
    assert fx.dice(truth, truth) == 1.0
    half = truth.copy()
    half[60:70, 65:70] = 0  # class 2 loses half its pixels: 2 x 50 / (50 + 100) = 2/3
    assert fx.dice(half, truth) == pytest.approx((1.0 + 2 / 3) / 2)
    extra = truth.copy()
    extra[0:5, 0:5] = 3  # a class the truth lacks scores 0 and counts in the mean
    assert fx.dice(extra, truth) == pytest.approx(2 / 3)
    empty = np.zeros_like(truth)
    assert fx.dice(empty, truth) == 0.0
    assert fx.dice(empty, empty) == 1.0  # nothing to find, nothing found


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="same size"):
        fx.effort(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
