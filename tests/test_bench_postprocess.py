"""Post-processing of proposals (segdesk.ml.postprocess): the steps, and nnU-Net's rule that a
step is kept only when it raises Dice on the held-out labels."""

import numpy as np

from segdesk.ml import postprocess as pp


def blobs(shape=(64, 64)):
    """Truth: two solid 12 x 12 objects."""
    t = np.zeros(shape, np.int64)
    t[5:17, 5:17] = 1
    t[30:42, 30:42] = 1
    return t


def test_remove_specks_and_fill_holes():
    pred = blobs().astype(np.uint8)
    pred[50, 50] = 1  # a speck
    pred[8:10, 8:10] = 0  # a hole
    cleaned = pp.remove_specks(pred, 1, min_area=5)
    assert cleaned[50, 50] == 0 and cleaned[5:17, 5:17].sum() == 140
    filled = pp.fill_holes(cleaned, 1, max_area=10)
    assert (filled == blobs()).all()
    # a hole touching the border is not a hole
    edge = np.ones((10, 10), np.uint8)
    edge[0:2, 4:6] = 0
    assert (pp.fill_holes(edge, 1, 100) == edge).all()


def test_apply_follows_the_spec_and_scales_areas():
    pred = blobs().astype(np.uint8)
    pred[50:52, 50:52] = 1  # 4-pixel speck
    spec = {"classes": {"1": {"min_area": 2.0}}}
    assert pp.apply(pred, spec)[50, 50] == 1  # 4 >= 2
    assert pp.apply(pred, spec, area_factor=4.0)[50, 50] == 0  # 4 < 8
    assert pp.apply(pred, None) is pred


def test_a_proposal_too_large_for_its_components_is_shown_without_the_steps_but_still_gated(monkeypatch, caplog):
    """Labelling components takes ~10 bytes a pixel (4 GB at 20,000 px): above MAX_PIXELS the steps
    are skipped, and said so in the log, rather than taking the machine's memory."""
    pred = blobs().astype(np.uint8)
    pred[50:52, 50:52] = 1  # a speck the spec removes
    spec = {"classes": {"1": {"min_area": 10.0}}}
    monkeypatch.setattr(pp, "MAX_PIXELS", pred.size - 1)
    with caplog.at_level("INFO", logger="segdesk.ml.postprocess"):
        shown = pp.apply(pred, spec)
    assert shown[50, 50] == 1 and "post-processing skipped" in caplog.text
    assert not pp.apply(pred, {**spec, "propose": False}).any()  # a withheld model stays withheld
    monkeypatch.setattr(pp, "MAX_PIXELS", pred.size)
    assert pp.apply(pred, spec)[50, 50] == 0

def test_choose_keeps_a_step_only_when_it_helps():
    truth = blobs()
    noisy = truth.astype(np.uint8).copy()
    noisy[[50, 55, 60], [50, 20, 5]] = 1  # specks the labels never show
    noisy[10:12, 10:12] = 0  # a hole the labels never show
    spec = pp.choose([(noisy, truth)] * 2, n_classes=1)
    steps = spec["classes"]["1"]
    assert steps["min_area"] > 1 and steps["max_hole"] > 4
    assert (pp.apply(noisy, spec) == truth).all()

    clean = truth.astype(np.uint8)
    assert pp.choose([(clean, truth)], n_classes=1)["classes"] == {}  # nothing to gain: no step


def test_choose_never_removes_objects_the_labels_show_to_be_real():
    """Truth with many small objects: removing small components would hurt, so it is refused."""
    truth = np.zeros((64, 64), np.int64)
    for y in range(4, 60, 8):
        for x in range(4, 60, 8):
            truth[y:y + 2, x:x + 2] = 1
    truth[20:40, 20:40] = 1
    spec = pp.choose([(truth.astype(np.uint8), truth)], n_classes=1)
    assert spec["classes"] == {}


def test_unlabelled_pixels_do_not_count():
    truth = blobs()
    truth[45:64, 45:64] = -100  # unlabelled
    pred = blobs().astype(np.uint8)
    pred[50, 50] = 1  # a speck where nothing is known
    assert pp.choose([(pred, truth)], n_classes=1)["classes"] == {}


def test_keep_largest_is_chosen_for_one_object_per_image():
    truth = np.zeros((64, 64), np.int64)
    truth[10:40, 10:40] = 1
    pred = truth.astype(np.uint8).copy()
    pred[50:56, 50:56] = 1  # a 36-px false blob, as big as any speck threshold allows
    pred[2:8, 50:62] = 1
    assert (pp.keep_largest(pred, 1) == truth).all()
    spec = pp.choose([(pred, truth)], n_classes=1)
    assert spec["classes"]["1"].get("largest_only") is True
    assert (pp.apply(pred, spec) == truth).all()


def test_proposals_that_cost_more_than_drawing_are_withheld():
    truth = blobs()
    good = truth.astype(np.uint8)
    spec = pp.choose([(good, truth)], n_classes=1)
    assert spec["propose"] is True and spec["val_effort_ratio"] == 0.0
    assert not pp.withholds(spec) and (pp.apply(good, spec) == good).all()

    bad = np.zeros_like(good)
    bad[::7, :] = 1  # stripes everywhere: far more outline to erase than the truth has
    bad[:, ::9] = 1
    spec = pp.choose([(bad, truth)], n_classes=1)
    assert spec["propose"] is False and spec["val_effort_ratio"] > 1
    assert pp.withholds(spec)
    assert not pp.apply(bad, spec).any()  # shown as an empty proposal
    assert pp.apply(bad, spec, gate=False).any()
    assert not pp.withholds(None) and not pp.withholds({"classes": {}})


def test_an_image_far_less_sure_than_every_held_out_one_is_withheld():
    """A model that proposes keeps the largest uncertainty of its held-out images; on an image over
    twice as unsure (another stain, scanner or view) its proposal is withheld, and said why. The
    threshold is at least twice UNLIKE_FLOOR (0.1); older specs without the number withhold nothing more."""
    truth = blobs()
    good = truth.astype(np.uint8)
    spec = pp.choose([(good, truth)], n_classes=1, uncertainties=[0.04, 0.11, 0.07])
    assert spec["propose"] is True and spec["val_uncertainty_max"] == 0.11
    assert not pp.unlike_held_out(spec, 0.22) and pp.unlike_held_out(spec, 0.2201)
    assert not pp.withholds_image(spec, 0.2) and pp.withholds_image(spec, 0.32)
    assert (pp.apply(good, spec, unsure=0.2) == good).all()
    assert not pp.apply(good, spec, unsure=0.32).any()
    assert (pp.apply(good, spec, gate=False, unsure=0.32) == good).all()
    assert pp.why_unlike(spec, 0.33) == "3.0x less sure than on any held-out image"

    sure = pp.choose([(good, truth)], n_classes=1, uncertainties=[0.01])
    assert not pp.unlike_held_out(sure, 0.19) and pp.unlike_held_out(sure, 0.21)  # 2 x UNLIKE_FLOOR
    older = pp.choose([(good, truth)], n_classes=1)
    assert "val_uncertainty_max" not in older and not pp.withholds_image(older, 0.5)
    assert not pp.unlike_held_out(spec, None) and not pp.unlike_held_out(None, 0.5)


def test_predictor_withholds_its_proposal_on_an_image_unlike_the_held_out_ones():
    from segdesk.ml.inference import Predictor

    predictor = Predictor.untrained(1, device="cpu")  # random weights: unsure everywhere
    image = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    unsure = predictor.predict(image).uncertainty
    assert unsure > 2 * pp.UNLIKE_FLOOR
    predictor.postprocess = {"classes": {}, "propose": True, "val_uncertainty_max": round(unsure, 4)}
    assert predictor.predict(image).withheld is False  # as unsure as on its held-out images
    predictor.postprocess["val_uncertainty_max"] = round(unsure / 2.5, 4)
    pred = predictor.predict(image)
    assert pred.withheld is True and not pred.classes.any() and pred.uncertainty == unsure
    predictor.gate = False  # show anyway
    assert predictor.predict(image).withheld is False


def test_held_out_labels_with_nothing_to_draw_judge_nothing():
    """A held-out region without any object cannot tell a proposal's worth: withheld, and said why."""
    empty = np.full((40, 40), pp.IGNORE, np.int16)
    empty[:, 25:] = 0  # a held-out band of background, the rest unlabelled
    spec = pp.choose([(np.zeros((40, 40), np.uint8), empty)], n_classes=1)
    assert spec["propose"] is False and "val_effort_ratio" not in spec
    assert pp.why_withheld(spec) == "the labels it was checked on had nothing to draw where they were held out"


def test_predictor_reports_a_withheld_proposal():
    from segdesk.ml.inference import Predictor

    predictor = Predictor.untrained(1, device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    assert predictor.predict(image).withheld is False
    predictor.postprocess = {"classes": {}, "propose": False}
    pred = predictor.predict(image)
    assert pred.withheld is True and not pred.classes.any()


def test_a_proposal_off_by_a_few_pixels_on_a_large_object_is_shown():
    """A 60 x 60 object proposed 4 px to the right (128 x 128, t = 1). Correcting it means drawing
    the one right edge: one 4 x 60 strip's outline, 2 x 57 + 2 x 1 + 4 sqrt(2) = 121.657 (see
    tests/test_bench_effort.py, the offset edge), against 4 x 57 + 4 sqrt(2) = 233.657 from
    scratch: ratio 0.521, shown. The region measure counts both strips whole, 1.041 of drawing:
    under it this proposal was withheld."""
    truth = np.zeros((128, 128), np.int64)
    truth[30:90, 30:90] = 1
    pred = np.zeros((128, 128), np.uint8)
    pred[30:90, 34:94] = 1
    spec = pp.choose([(pred, truth)], n_classes=1)
    assert spec["classes"] == {}  # nothing for post-processing to fix
    strip, scratch = 2 * 57 + 2 * 1 + 4 * np.sqrt(2), 4 * 57 + 4 * np.sqrt(2)
    assert spec["val_effort_ratio"] == round(strip / scratch, 4) == 0.5207
    assert spec["val_region_effort_ratio"] == round(2 * strip / scratch, 4) == 1.0413
    assert spec["propose"] is True and not pp.withholds(spec)
