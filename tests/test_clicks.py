"""Click prompts: the protocol's next click, the prompt maps, and a model that learns to read clicks."""

import cv2
import numpy as np
import pytest
import torch

from segdesk.core.clicks import Click, disagrees, keep_clicks, local_change, next_click, prompt_maps, random_clicks
from segdesk.core.encoding import mean_dice
from segdesk.ml.checkpoints import CheckpointStore
from segdesk.ml.click_window import CLICK_WINDOW_MAX, click_window
from segdesk.ml.inference import Predictor
from tests.synthetic import make_choice_sample


def square(size=40, box=(10, 30, 10, 30), value=1):
    mask = np.zeros((size, size), np.uint8)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = value
    return mask


def test_first_click_on_an_empty_mask_goes_to_the_middle_of_the_object_and_is_positive():
    click = next_click(np.zeros((40, 40), np.uint8), square())
    assert click.positive and click.class_number == 1
    assert 18 <= click.y <= 21 and 18 <= click.x <= 21


def test_a_spill_gets_a_negative_click_for_the_shown_class_inside_the_spill():
    shown = square(box=(10, 30, 10, 38))  # 8 px too far right
    click = next_click(shown, square())
    assert not click.positive and click.class_number == 1
    assert 30 <= click.x < 38 and 10 <= click.y < 30


def test_the_largest_error_is_clicked_first_and_agreement_needs_no_click():
    truth = square(60, (5, 15, 5, 15)) | square(60, (30, 55, 30, 55))  # small and large object missed
    click = next_click(np.zeros_like(truth), truth)
    assert 30 <= click.y < 55 and 30 <= click.x < 55
    assert next_click(truth, truth) is None


def test_a_wrong_class_gets_a_positive_click_for_the_true_class():
    truth, shown = square(value=2), square(value=1)
    click = next_click(shown, truth)
    assert click.positive and click.class_number == 2


def test_errors_where_the_truth_is_unknown_are_not_clicked():
    truth = square()
    valid = np.zeros(truth.shape, bool)
    assert next_click(np.zeros_like(truth), truth, valid) is None


def test_prompt_maps_put_each_click_in_its_class_channel_at_working_scale():
    previous = square(40, (0, 20, 0, 20), value=2)
    clicks = [Click(30, 30, 1, True), Click(10, 10, 2, False)]
    maps = prompt_maps(clicks, previous, 2, (20, 20), (0.5, 0.5))
    assert maps.shape == (6, 20, 20) and maps.dtype == np.float32
    pos1, pos2, neg1, neg2, prev1, prev2 = maps
    assert pos1[15, 15] == 1 and pos1.sum() > 1 and pos2.sum() == 0
    assert neg2[5, 5] == 1 and neg1.sum() == 0
    assert prev1.sum() == 0 and prev2[:10, :10].all() and prev2.sum() == 100
    assert not prompt_maps([], None, 2, (20, 20)).any()  # the automatic proposal


def test_random_starting_clicks_land_on_the_object_and_on_the_background():
    truth = square()
    clicks = random_clicks(truth, np.random.default_rng(0), positives=3, negatives=2)
    assert sum(c.positive for c in clicks) == 3 and len(clicks) == 5
    assert all(truth[c.y, c.x] == (1 if c.positive else 0) for c in clicks)


def test_a_click_is_never_overruled_at_its_own_pixel():
    mask = square()
    kept = keep_clicks(mask, [Click(0, 0, 1, True), Click(20, 20, 1, False)])
    assert kept[0, 0] == 1 and kept[20, 20] == 0 and mask[20, 20] == 1


def test_a_click_takes_the_change_connected_to_it_and_nothing_else():
    """The answer grows the square at the click (rows 10-29 -> 10-34) and also, far from the
    click, wipes out an earlier correction (the block at 40-44) and adds an island (0-2): only
    the growth touching the click is taken."""
    previous = square(50, (10, 30, 10, 30))
    previous[40:45, 40:45] = 1
    answer = square(50, (10, 35, 10, 30))
    answer[0:3, 0:3] = 1
    merged = local_change(previous, answer, [(32, 20)])
    assert merged[30:35, 10:30].all() and merged[40:45, 40:45].all() and not merged[0:3, 0:3].any()
    assert int(merged.sum()) == int(previous.sum()) + 5 * 20 and int(previous[30:35].sum()) == 0
    # a negative click: the answer removes the block it was made on; with two clicks both changes
    assert not local_change(previous, answer, [(42, 42)])[40:45, 40:45].any()
    both = local_change(previous, answer, [(42, 42), (1, 1)])
    assert not both[40:45, 40:45].any() and both[0:3, 0:3].all() and not both[30:35].any()
    # an answer that agrees with the mask at the click changes nothing
    assert (local_change(previous, answer, [(20, 20)]) == previous).all()


def test_a_click_only_moves_pixels_its_way():
    """"Not this" on a spill: the answer trims the spill but, touching the click, also grows the
    object on the other side (a model that misread the click). Only the trim is taken; a positive
    click on the grown region likewise takes the growth but not the trim connected to it."""
    previous = square(50, (10, 30, 10, 30))
    previous[30:34, 18:22] = 1  # a spill below the square
    answer = square(50, (10, 30, 10, 30))
    answer[30:34, 18:22] = 0  # the spill trimmed...
    answer[30:40, 22:30] = 1  # ...and a new region grown beside it, touching the click
    negative = Click(31, 21, 1, False)
    merged = local_change(previous, answer, [(31, 21)], [negative])
    assert not merged[30:34, 18:22].any() and not merged[30:40, 22:30].any()
    assert local_change(previous, answer, [(31, 21)])[34:40, 22:30].all()  # without the click's sign: all
    positive = Click(35, 25, 1, True)
    grown = local_change(previous, answer, [(35, 25)], [positive])
    assert grown[30:40, 22:30].all() and grown[30:34, 18:22].all()
    assert not local_change(previous, answer, [(35, 25)])[30:34, 18:22].any()


def test_a_click_disagrees_with_a_mask_that_does_not_show_it_yet():
    mask = square(20, (5, 10, 5, 10))
    assert not disagrees(mask, Click(7, 7, 1, True)) and disagrees(mask, Click(0, 0, 1, True))
    assert disagrees(mask, Click(7, 7, 1, False)) and not disagrees(mask, Click(0, 0, 1, False))
    assert not disagrees(mask, Click(50, 50, 1, True))


def test_click_window_holds_the_clicked_object_and_stays_in_bounds():
    previous = square(600, (100, 300, 100, 300))
    y0, x0, y1, x1 = click_window((600, 600), [(150, 305)], previous, [1])
    assert y0 <= 100 and x0 <= 100 and y1 >= 300 and x1 >= 305
    y0, x0, y1, x1 = click_window((600, 600), [(5, 595)], None, [1])
    assert 0 <= y0 < y1 <= 600 and 0 <= x0 < x1 <= 600 and y1 - y0 >= 256
    big = square(1000, (0, 1000, 0, 1000))
    y0, x0, y1, x1 = click_window((1000, 1000), [(500, 500)], big, [1])
    assert y1 - y0 == CLICK_WINDOW_MAX and y0 <= 500 < y1


# ----- a model that learned clicks (conftest.click_model)

def test_the_checkpoint_says_it_reads_clicks(click_model):
    store = CheckpointStore(click_model / "models")
    meta = store.list()[-1]
    assert meta["prompts"] == "clicks" and meta["arch"]["prompt_channels"] == 3
    assert (click_model / "models" / f"{meta['id']}.onnx").is_file()


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_one_click_tells_the_model_which_disc_is_meant(click_model, engine):
    """Two identical discs, one is the class: the automatic proposal cannot know which (it takes
    both or neither, or guesses), a click on a wrong proposal can. Clicked as the protocol clicks:
    only proposals below Dice 0.9, six of them."""
    predictor = Predictor.from_checkpoint(click_model / "models", device="cpu", engine=engine)
    assert predictor.accepts_clicks
    # the model's whole answer: a negative click on the wrong disc moves it to the other disc, which
    # the app's local change (next test) would leave for a second click
    predictor.local_clicks_from = None
    rng = np.random.default_rng(123)
    before, after = [], []
    for i in range(40):
        image, truth = make_choice_sample(rng)
        shown = predictor.predict(image).classes
        if mean_dice(shown, truth) >= 0.9:  # guessed the right disc: nothing to click
            continue
        click = next_click(shown, truth)
        refined = predictor.refine(image, [click], shown, key=i)
        before.append(mean_dice(shown, truth))
        after.append(mean_dice(refined.classes, truth))
        assert refined.box is not None
        if len(before) == 6:
            break
    assert len(before) == 6, f"only {len(before)} of 40 proposals were wrong"
    assert np.mean(after) > np.mean(before) + 0.15, (before, after)
    assert np.mean(after) > 0.8


def test_a_click_changes_only_what_is_connected_to_it(click_model):
    """In the app (local_clicks_from = 1) every pixel a click's answer changes is connected to
    the click: the rest of the mask stays as the user saw it."""
    predictor = Predictor.from_checkpoint(click_model / "models", device="cpu")
    assert predictor.local_clicks_from == 1
    rng = np.random.default_rng(321)
    checked = 0
    for i in range(40):
        image, truth = make_choice_sample(rng)
        shown = predictor.predict(image).classes
        click = next_click(shown, truth)
        if click is None:
            continue
        refined = predictor.refine(image, [click], shown, key=i).classes
        changed = (refined != shown).astype(np.uint8)
        assert changed[int(click.y), int(click.x)] == 1  # the click's own pixel at least
        n, regions = cv2.connectedComponents(changed, connectivity=8)
        y, x = int(click.y), int(click.x)
        touching = set(np.unique(regions[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2])) - {0}
        assert touching == set(range(1, n)), f"image {i}: a change away from the click"
        checked += 1
        if checked == 6:
            break
    assert checked == 6


def test_clicks_further_apart_than_a_window_are_answered(click_model):
    """The window follows the last click; an earlier click outside it (a wide image, clicks at both
    ends) is left as it was answered, and the new one is answered."""
    predictor = Predictor.from_checkpoint(click_model / "models", device="cpu")
    rng = np.random.default_rng(5)
    image = np.concatenate([make_choice_sample(rng)[0] for _ in range(14)], axis=1)
    assert image.shape[1] > 2 * CLICK_WINDOW_MAX
    shown = predictor.predict(image).classes
    far = image.shape[1] - 10
    first = predictor.refine(image, [Click(20, 10, 1, True)], shown, key="wide").classes
    both = predictor.refine(image, [Click(20, 10, 1, True), Click(20, far, 1, True)], first, key="wide").classes
    assert both[20, 10] == 1 and both[20, far] == 1
    assert np.array_equal(both[:, :CLICK_WINDOW_MAX // 2], first[:, :CLICK_WINDOW_MAX // 2])


def test_a_model_without_click_inputs_refuses_clicks_and_still_proposes():
    torch.manual_seed(0)
    from segdesk.ml.config import TrainConfig

    predictor = Predictor.untrained(1, TrainConfig(base_width=4, depth=2, clicks=False), device="cpu")
    assert not predictor.accepts_clicks
    image = np.zeros((32, 32), np.uint8)
    assert predictor.predict(image).classes.shape == (32, 32)
    with pytest.raises(ValueError, match="does not read clicks"):
        predictor.refine(image, [Click(5, 5, 1, True)], None)


def test_a_click_tilts_the_answer_near_it_as_far_as_it_had_room():
    from segdesk.core.clicks import honour_clicks

    probs = np.zeros((2, 60, 60), np.float32)
    probs[1] = 0.3  # the model finds the class unlikely everywhere...
    probs[1, :, 40:] = 0.001  # ...and all but impossible on the right
    probs[0] = 1 - probs[1]
    previous = square(60, (0, 60, 0, 12))  # the mask the user corrects: class 1 on the left edge
    click = Click(30, 24, 1, True)  # in background 12 px from the nearest class-1 pixel
    tilted = honour_clicks(probs, [(30, 24)], [click], previous)
    assert np.allclose(tilted.sum(axis=0), 1.0, atol=1e-5)
    chosen = tilted.argmax(axis=0)
    assert chosen[30, 24] == 1 and chosen[30, 34] == 1  # the click's region, where the model allowed it
    assert chosen[30, 45] == 0  # not where the model was sure it is not the class
    assert chosen[0, 59] == 0 and chosen[59, 59] == 0
    negative = honour_clicks(tilted, [(30, 24)], [Click(30, 24, 1, False)], chosen.astype(np.uint8))
    assert negative.argmax(axis=0)[30, 24] == 0


def test_prompt_maps_of_a_window_are_that_window_of_the_whole_maps():
    previous = square(40, (5, 25, 10, 30), value=1)
    clicks = [Click(30, 31, 1, True), Click(12, 14, 1, False)]
    whole = prompt_maps(clicks, previous, 1, (20, 20), (0.5, 0.5))
    window = prompt_maps(clicks, previous[8:36, 12:40], 1, (14, 14), (0.5, 0.5), origin=(4, 6))
    assert np.array_equal(window, whole[:, 4:18, 6:20])


def test_a_click_where_the_mask_has_one_class_only_pulls_as_far_as_the_widest_reach(recwarn):
    """The first click on an empty proposal: nothing of another class to measure room against
    (OpenCV's distance is then ~1e38); the pull reaches CLICK_REACH_MAX, without an overflow."""
    from segdesk.core.clicks import honour_clicks

    probs = np.full((2, 40, 40), 0.5, np.float32)
    probs[1] = 0.3
    probs[0] = 0.7
    tilted = honour_clicks(probs, [(20, 20)], [Click(20, 20, 1, True)], np.zeros((40, 40), np.uint8))
    assert np.isfinite(tilted).all() and (tilted.argmax(axis=0)[15:26, 15:26] == 1).all()
    assert tilted[1, 20, 20] > tilted[1, 0, 0] > probs[1, 0, 0]  # strongest at the click, felt at the corner
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_click_wins_its_neighbourhood_where_the_model_was_sure_of_the_opposite():
    """A missed object the model is sure is background (p = 0.001): the click's class takes the
    pixels around the click, not just the clicked one; a negative click on a sure false positive
    clears its neighbourhood the same way."""
    from segdesk.core.clicks import honour_clicks

    probs = np.zeros((2, 80, 80), np.float32)
    probs[1] = 0.001
    probs[0] = 1 - probs[1]
    previous = square(80, (0, 80, 0, 10))  # class 1 only on the left edge: 30 px of room at the click
    chosen = honour_clicks(probs, [(40, 40)], [Click(40, 40, 1, True)], previous).argmax(axis=0)
    assert (chosen[36:45, 36:45] == 1).all()
    assert chosen[40, 75] == 0 and chosen[5, 40] == 0  # the model's answer still rules further out
    sure = probs[::-1].copy()  # now sure it is the class everywhere
    cleared = honour_clicks(sure, [(40, 40)], [Click(40, 40, 1, False)], 1 - previous).argmax(axis=0)
    assert (cleared[36:45, 36:45] == 0).all() and cleared[40, 75] == 1


def test_a_click_in_an_empty_window_reaches_about_an_object_not_the_whole_window():
    from segdesk.core.clicks import CLICK_REACH_MAX, honour_clicks

    probs = np.zeros((2, 300, 300), np.float32)
    probs[1] = 0.3  # unsure, everywhere: before the cap one click took the whole window
    probs[0] = 0.7
    chosen = honour_clicks(probs, [(150, 150)], [Click(150, 150, 1, True)], np.zeros((300, 300), np.uint8)).argmax(axis=0)
    assert chosen[150, 150 + int(CLICK_REACH_MAX)] == 1
    assert chosen[150, 150 + int(2 * CLICK_REACH_MAX)] == 0 and chosen[0, 0] == 0
