"""``segdesk bench loop --clicks``: the clicks protocol and its NoC@90 figures."""

import json
from types import SimpleNamespace

import numpy as np

from segdesk.bench.clicks import MAX_CLICKS, run_clicks, summarise_clicks
from segdesk.cli import main
from segdesk.core.encoding import mean_dice
from segdesk.ml.inference import Predictor
from tests.synthetic import make_choice_sample
from tests.test_bench_loop import TINY, restore_threads  # noqa: F401 (autouse: torch threads restored)


def test_clicks_reach_the_target_with_a_model_that_reads_them(click_model):
    predictor = Predictor.from_checkpoint(click_model / "models", device="cpu")
    rng = np.random.default_rng(7)
    records = []
    for i in range(5):
        image, truth = make_choice_sample(rng)
        shown = predictor.predict(image).classes
        record = run_clicks(predictor, image, shown, truth, key=i)
        assert record["clicks_usable"] and record["clicks"] == record["noc90"] <= MAX_CLICKS
        assert record["dice_after_1"] >= mean_dice(shown, truth) - 0.02
        assert 0 <= record["setbacks"] <= record["clicks"]
        records.append({**record, "index": i + 1, "scratch_effort": 1.0})
    assert np.mean([r["noc90"] for r in records]) <= 3
    summary = summarise_clicks(records)
    assert summary["noc90_1_10"] == np.mean([r["noc90"] for r in records])
    assert summary["clicks_total"] == sum(r["clicks"] for r in records)
    assert summary["setbacks"] == sum(r["setbacks"] for r in records)
    assert summary["noc90_11_20"] is None


class _Answers:
    """A click model whose answers are given: the second click erases the object."""

    accepts_clicks = True

    def __init__(self, masks):
        self.masks = list(masks)

    def refine(self, pixels, clicks, previous, key=None):
        return SimpleNamespace(classes=self.masks[len(clicks) - 1])


def test_a_click_that_undoes_work_counts_as_a_setback():
    truth = np.zeros((40, 40), np.uint8)
    truth[10:30, 10:30] = 1
    spill = truth.copy()
    spill[5:35, 0:10] = 1  # a false strip beside the object: the first click trims half of it
    trimmed = truth.copy()
    trimmed[20:35, 0:10] = 1
    erased = np.zeros_like(truth)  # the second click takes the whole object away
    record = run_clicks(_Answers([trimmed, erased, truth]), np.zeros((40, 40), np.uint8), spill, truth, key=0)
    assert record["clicks"] == 3 and record["noc90"] == 3
    assert record["setbacks"] == 1  # the trim raised Dice, the erasure lowered it, the last click restored it


def test_without_a_model_that_reads_clicks_the_user_draws_and_noc_is_the_maximum():
    truth = np.zeros((32, 32), np.uint8)
    truth[8:20, 8:20] = 1
    record = run_clicks(None, np.zeros((32, 32), np.uint8), np.zeros_like(truth), truth, key=0)
    assert record["noc90"] == MAX_CLICKS and record["clicks"] == 0 and not record["clicks_usable"]
    assert record["dice_after_5"] == 0.0
    done = run_clicks(None, np.zeros((32, 32), np.uint8), truth, truth, key=0)
    assert done["noc90"] == 0  # the proposal was already right


def test_bench_loop_clicks_reports_noc_per_block(discs, tmp_path, capsys):
    out = tmp_path / "clicks.json"
    code = main(["bench", "loop", "--data", str(discs), "--images", "4", "--train-steps", "6", "--clicks",
                 "--device", "cpu", "--threads", "1", "--seed", "1", *TINY, "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    result = json.loads(out.read_text())
    rows = result["per_image"]
    assert result["clicks"] is True and all(0 <= r["noc90"] <= MAX_CLICKS for r in rows)
    assert rows[0]["noc90"] == MAX_CLICKS  # no model before the first image
    assert result["noc90_1_10"] == round(float(np.mean([r["noc90"] for r in rows])), 2)
    assert f"NoC@90 {result['noc90_1_10']} / None / None" in stdout
    assert result["effort_ratio_after_clicks"] >= 0 and result["click_s_median"] is not None


def test_bench_clicks_replays_a_kept_run_image_for_image(discs, tmp_path, capsys):
    """The replay's default variant gives the run's own NoC@90 on every image (same models, same
    proposals); another variant is replayed on the same models; a file that is no loop result is
    refused with a message."""
    out, keep = tmp_path / "run.json", tmp_path / "kept"
    code = main(["bench", "loop", "--data", str(discs), "--images", "4", "--train-steps", "6", "--clicks",
                 "--device", "cpu", "--threads", "1", "--seed", "1", *TINY, "--keep", str(keep), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    replayed = tmp_path / "replay.json"
    code = main(["bench", "clicks", "--run", str(out), "--project", str(keep), "--variant", "default",
                 "--variant", "no-fit", "--out", str(replayed)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    run, result = json.loads(out.read_text()), json.loads(replayed.read_text())
    assert [r["default"]["noc90"] for r in result["per_image"]] == [r["noc90"] for r in run["per_image"]]
    assert [r["checkpoint"] for r in result["per_image"]] == [r["checkpoint"] for r in run["per_image"]]
    assert result["variants"]["default"]["noc90_1_10"] == run["noc90_1_10"]
    assert all("noc90" in r["no-fit"] for r in result["per_image"]) and result["settings"]["no-fit"] == {"fit_clicks": False}
    assert "default: NoC@90" in stdout and "no-fit: NoC@90" in stdout
    code = main(["bench", "clicks", "--run", str(discs / "masks" / "d0.png"), "--project", str(keep),
                 "--out", str(tmp_path / "bad.json")])
    err = capsys.readouterr().err
    assert code == 1 and "not a result of segdesk bench loop" in err and "Traceback" not in err
    code = main(["bench", "clicks", "--run", str(out), "--project", str(keep), "--variant", "sideways",
                 "--out", str(tmp_path / "bad.json")])
    assert code == 1 and "Unknown variant sideways" in capsys.readouterr().err
