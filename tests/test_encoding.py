"""The label encoding (segdesk.core.encoding): what every reader and writer of labels relies on."""

import numpy as np
import pytest

from segdesk.core import encoding


def test_classes_are_numbered_from_one_and_stored_one_higher():
    assert [encoding.class_number(i) for i in range(3)] == [1, 2, 3]
    assert [encoding.label_value(k) for k in (0, 1, 2)] == [encoding.BACKGROUND, 2, 3]
    assert [encoding.class_value(i) for i in range(2)] == [2, 3]
    assert encoding.max_label_value(2) == 3


def test_a_class_mask_round_trips_through_a_label():
    mask = np.array([[0, 1], [2, 0]], np.uint8)
    label = encoding.mask_to_label(mask)
    assert label.tolist() == [[1, 2], [3, 1]]
    assert encoding.label_to_mask(label).tolist() == mask.tolist()


def test_unlabelled_pixels_become_background_in_a_mask_and_are_ignored_in_training():
    label = np.array([[0, 1, 2, 3]], np.uint8)
    assert encoding.label_to_mask(label).tolist() == [[0, 0, 1, 2]]
    target = encoding.label_to_target(label)
    assert target.dtype == np.int64
    assert target.tolist() == [[encoding.IGNORE, 0, 1, 2]]


def test_accepting_keeps_the_users_pixels_fills_the_rest_from_the_proposal_then_background():
    painted = np.array([[0, 1, 3, 0]], np.uint8)
    proposal = np.array([[2, 2, 2, 0]], np.uint8)  # a proposal may leave pixels unsaid too
    assert encoding.merge_accept(painted, proposal).tolist() == [[2, 1, 3, 1]]
    assert encoding.merge_accept(painted).tolist() == [[1, 1, 3, 1]]
    assert painted.tolist() == [[0, 1, 3, 0]]  # the caller's label is left alone


def test_dice_of_two_masks_counts_only_the_counted_pixels():
    pred = np.array([[1, 1, 0, 0]], bool)
    truth = np.array([[1, 0, 0, 1]], bool)
    assert encoding.dice(pred, truth) == pytest.approx(2 * 1 / 4)
    counted = np.array([[1, 1, 1, 0]], bool)  # the truth's second pixel is not labelled
    assert encoding.dice(pred, truth, counted) == pytest.approx(2 * 1 / 3)
    assert encoding.dice(np.zeros(4, bool), np.zeros(4, bool)) is None


def test_per_class_dice_is_none_for_a_class_the_truth_lacks():
    truth = np.array([[1, 1, 0, 0]], np.uint8)
    pred = np.array([[1, 0, 2, 0]], np.uint8)
    per_class = encoding.dice_per_class(pred, truth, 2)
    assert per_class[0] == pytest.approx(2 / 3)
    assert per_class[1] is None
    # ...while the per-image Dice counts the invented class as a miss
    assert encoding.mean_dice(pred, truth) == pytest.approx((2 / 3 + 0.0) / 2)


def test_two_classes_swapped_score_zero():
    truth = np.array([[1, 1, 2, 2]], np.uint8)
    assert encoding.mean_dice(3 - truth, truth) == 0.0


def test_whether_a_label_has_unlabelled_pixels_is_read_without_a_label_sized_copy():
    """Saving a label asks this of every label; at 20,000 px a comparison's mask was 400 MB more."""
    import tracemalloc

    label = np.full((1500, 1500), encoding.BACKGROUND, np.uint8)
    label[:, 700:] = encoding.class_value(1)
    assert not encoding.has_unlabelled(label)
    label[1499, 1499] = encoding.UNLABELLED
    tracemalloc.start()
    try:
        assert encoding.has_unlabelled(label)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < label.nbytes // 20
