"""Rasterisation helpers: shapes a user would see on the canvas."""

import numpy as np
import pytest

from segdesk.core.brush import fill_mask, polygon_mask, segment_mask


def reference_disk(shape, cx, cy, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2


def paste(shape, drawn):
    out = np.zeros(shape, bool)
    if drawn is not None:
        (y0, x0, y1, x1), mask = drawn
        assert mask.shape == (y1 - y0, x1 - x0)
        out[y0:y1, x0:x1] = mask
    return out


@pytest.mark.parametrize("radius, count", [(0.5, 1), (1, 5), (1.5, 9), (3, 29), (10, 317)])
def test_click_paints_the_reference_disk(radius, count):
    shape = (40, 40)
    got = paste(shape, segment_mask((20, 20), (20, 20), radius, shape))
    assert got.sum() == count
    assert np.array_equal(got, reference_disk(shape, 20, 20, radius))


def test_subpixel_cursor_rounds_to_a_pixel_centre():
    shape = (20, 20)
    a = paste(shape, segment_mask((7.3, 8.6), (7.3, 8.6), 3, shape))
    assert np.array_equal(a, reference_disk(shape, 7, 9, 3))


def test_box_is_tight():
    box, mask = segment_mask((10, 10), (30, 12), 2, (64, 64))
    assert box == (8, 8, 15, 33)
    assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()


def test_fast_move_paints_a_continuous_band():
    shape = (10, 50)
    got = paste(shape, segment_mask((2, 2), (40, 2), 1, shape))
    assert got[2, 2:41].all()  # no gap along the path
    assert got[1, 2:41].all() and got[3, 2:41].all()
    assert not got[2, 42:].any() and not got[:, :1].any()


def test_diagonal_segment_matches_distance_to_segment():
    shape = (60, 60)
    got = paste(shape, segment_mask((5, 7), (50, 41), 4, shape))
    yy, xx = np.mgrid[:60, :60]
    a, b = np.array([5.0, 7.0]), np.array([50.0, 41.0])
    d = b - a
    t = np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / d.dot(d), 0, 1)
    ref = (xx - a[0] - t * d[0]) ** 2 + (yy - a[1] - t * d[1]) ** 2 <= 16
    assert np.array_equal(got, ref)


def test_edge_clips_and_outside_is_none():
    shape = (30, 20)
    drawn = segment_mask((-2, 0), (3, 0), 3, shape)
    box, mask = drawn
    assert box[0] == 0 and box[1] == 0
    full = reference_disk((40, 40), 10, 10, 3)  # disk at (0,0) seen in a padded frame
    assert mask.sum() < full.sum()
    assert segment_mask((19, 29), (19, 29), 5, shape) is not None  # corner
    assert segment_mask((-20, -20), (-10, -30), 3, shape) is None
    assert segment_mask((100, 5), (200, 5), 3, shape) is None


def test_fill_mask_is_4_connected_region():
    label = np.zeros((10, 10), np.uint8)
    label[5, :] = 2  # wall splits top from bottom
    label[7, 7] = 3
    box, mask = fill_mask(label, 1, 1)
    assert box == (0, 0, 5, 10) and mask.all()
    box, mask = fill_mask(label, 0, 9)
    assert box == (6, 0, 10, 10) and mask.sum() == 39
    assert fill_mask(label, 10, 0) is None and fill_mask(label, -1, 0) is None
    # diagonal neighbours do not connect
    diag = np.zeros((3, 3), np.uint8)
    diag[0, 0] = diag[1, 1] = 2
    box, mask = fill_mask(diag, 0, 0)
    assert box == (0, 0, 1, 1) and mask.sum() == 1


def test_polygon_mask_triangle_and_too_few_points():
    shape = (120, 120)
    drawn = polygon_mask([(10, 10), (110, 10), (10, 110)], shape)
    area = paste(shape, drawn).sum()
    assert abs(area - 100 * 100 / 2) < 0.05 * 5000 + 2 * 100  # area plus the outline
    assert polygon_mask([(1, 1), (5, 5)], shape) is None
    assert polygon_mask([(-50, -50), (-10, -50), (-10, -10)], shape) is None
    clipped = polygon_mask([(-10, -10), (50, -10), (-10, 50)], shape)
    assert clipped is not None and clipped[0][:2] == (0, 0)


def test_bad_radius_rejected():
    with pytest.raises(ValueError):
        segment_mask((1, 1), (2, 2), 0, (5, 5))
