"""``segdesk bench loop`` end to end on a few generated images with a steps budget (seconds, CPU),
and the other bench commands' plumbing."""

import json

import numpy as np
import pytest
import torch

from segdesk.bench import loop, loop_report
from segdesk.cli import main

TINY = ["--set", "crop_size=32", "--set", "base_width=4", "--set", "depth=2", "--set", "batch_size=2",
        "--set", "val_every=4", "--set", "lr=3e-3"]


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_bench_loop_runs_the_app_loop_and_writes_json_and_png(discs, tmp_path, capsys):
    out = tmp_path / "result.json"
    code = main(["bench", "loop", "--data", str(discs), "--images", "4", "--train-steps", "6",
                 "--device", "cpu", "--threads", "1", "--seed", "3", *TINY, "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "effort ratio" in stdout and out.with_suffix(".png").is_file()
    result = json.loads(out.read_text())
    # the summary line names both measures, both last-ten Dice and the first image shown
    assert f"effort ratio {result['effort_ratio']} (region measure {result['region_effort_ratio']})" in stdout
    assert f"{result['dice_last10']} shown, {result['dice_last10_model']} the model's own" in stdout
    first = result["first_shown"]
    assert f"first proposal shown at image {first if first is not None else 'never'}" in stdout
    rows = result["per_image"]
    assert result["images"] == len(rows) == 4 and result["n_classes"] == 1
    assert result["budget"] == {"steps": 6} and result["config"]["base_width"] == 4
    # the first image has no model: an empty proposal costs exactly the scratch effort, both measures
    assert rows[0]["checkpoint"] is None and rows[0]["dice"] == 0.0
    assert rows[0]["effort"] == rows[0]["scratch_effort"] > 0
    assert rows[0]["region_effort"] == rows[0]["region_scratch_effort"] > 0
    assert all(r["train_steps"] == 6 for r in rows[:-1]) and rows[-1]["train_steps"] == 0
    assert any(r["checkpoint"] for r in rows[1:])  # later images get proposals from checkpoints
    for prefix in ("", "region_"):
        s = sum(r[f"{prefix}scratch_effort"] for r in rows)
        for variant in ("", "_no_gate", "_raw"):
            e = sum(r[f"{prefix}effort{variant}"] for r in rows)
            assert result[f"{prefix}effort_ratio{variant}"] == pytest.approx(e / s, abs=1e-4)
    assert result["dice_last10"] == pytest.approx(np.mean([r["dice"] for r in rows]), abs=1e-4)
    assert result["dice_last10_model"] == pytest.approx(np.mean([r["dice_no_gate"] for r in rows]), abs=1e-4)
    assert all(r["effort"] == r["scratch_effort"] for r in rows if r["withheld"])  # shown nothing
    shown = [r["index"] for r in rows if r["checkpoint"] and not r["withheld"]]
    assert first == (shown[0] if shown else None)
    progress = stderr.strip().splitlines()
    assert len(progress) == 4  # one progress line per image, with both measures
    assert all(" E/S " in line and " region " in line for line in progress)
    # the seed fixes the order; the order is a permutation of the folder's pairs
    assert [r["image"] for r in rows] == [s for s, _, _ in
                                          [loop.find_pairs(discs)[i] for i in np.random.default_rng(3).permutation(5)[:4]]]


def test_summary_arithmetic():
    """Image 1: no model (empty, E = S). Image 2: withheld (shown empty: Dice 0, E = S; the model's
    own proposal had Dice 0.5). Images 3-12: shown, Dice 0.8, E = 2, region effort 4, S = 10."""
    def row(i, e, d, c, d_model, withheld=False):
        return {"index": i, "effort": e, "scratch_effort": 10.0, "region_effort": 2 * e if e < 10 else 12.0,
                "region_scratch_effort": 12.0, "dice": d, "dice_no_gate": d_model, "checkpoint": c,
                "withheld": withheld, "train_s": 1.0, "train_steps": 2, "proposal_s": 0.1}
    rows = [row(1, 10.0, 0.0, None, 0.0), row(2, 10.0, 0.0, "0001", 0.5, withheld=True)]
    rows += [row(i, 2.0, 0.8, "0002", 0.8) for i in range(3, 13)]
    s = loop_report.summarise(rows)
    assert s["effort_ratio"] == pytest.approx((10 + 10 + 10 * 2) / 120, abs=1e-4)  # 0.3333
    assert s["region_effort_ratio"] == pytest.approx((12 + 12 + 10 * 4) / 144, abs=1e-4)  # 0.4444
    assert s["effort_ratio_last10"] == pytest.approx(0.2)
    assert s["region_effort_ratio_last10"] == pytest.approx(4 / 12, abs=1e-4)
    assert s["withheld"] == 1
    # the last ten are images 3-12: all shown
    assert s["dice_last10"] == pytest.approx(0.8) and s["dice_last10_model"] == pytest.approx(0.8)
    assert s["first_proposal_at"] == 2 and s["train_steps_total"] == 24
    assert s["first_shown"] == 3  # image 2's proposal was withheld
    assert loop_report.summarise(rows[:2])["first_shown"] is None
    # over images 1-10, the withheld image counts as shown empty: (0 + 0 + 8 x 0.8) / 10
    first = loop_report.summarise(rows[:10])
    assert first["dice_last10"] == pytest.approx(0.64)
    assert first["dice_last10_model"] == pytest.approx((0 + 0.5 + 8 * 0.8) / 10)


def test_summary_line_gives_both_measures_both_dice_and_the_first_image_shown():
    from segdesk.bench.commands import loop_summary_line

    result = {"effort_ratio": 0.42, "region_effort_ratio": 0.61, "dice_last10": 0.8, "dice_last10_model": 0.85,
              "first_shown": 5, "images": 30, "total_s": 12.3}
    assert loop_summary_line(result) == (
        "effort ratio 0.42 (region measure 0.61), Dice of the last ten 0.8 shown, 0.85 the model's own, "
        "first proposal shown at image 5, 30 images in 12 s")
    assert "first proposal shown at image never" in loop_summary_line({**result, "first_shown": None})


def test_bench_loop_errors_are_one_line(tmp_path, capsys):
    code = main(["bench", "loop", "--data", str(tmp_path), "--out", str(tmp_path / "r.json")])
    _, err = capsys.readouterr()
    assert code == 1 and "images/ and masks/" in err and "Traceback" not in err
    code = main(["bench", "loop", "--data", str(tmp_path), "--set", "nonsense=1", "--out", str(tmp_path / "r.json")])
    _, err = capsys.readouterr()
    assert code == 1 and "nonsense" in err


def test_bench_latency_counts_flops(tmp_path, capsys):
    out = tmp_path / "lat.json"
    code = main(["bench", "latency", "--sizes", "64,96", "--repeats", "1", "--base-width", "4",
                 "--device", "cpu", "--threads", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    small, large = result["sizes"]
    assert (small["size"], large["size"]) == (64, 96) and small["tiles"] == 1
    assert large["gflop"] > small["gflop"] > 0 and small["gflop_per_s"] > 0
    assert out.with_suffix(".png").is_file()


@pytest.mark.parametrize("command", ["loop", "clicks", "latency", "ui", "brush"])
def test_bench_commands_have_help(capsys, command):
    code = main(["bench", command, "--help"])
    out, _ = capsys.readouterr()
    assert code == 0 and f"usage: segdesk bench {command}" in out and "--out" in out


def test_init_names_scratch_starter_or_a_models_folder(tmp_path):
    from segdesk import demo
    from segdesk.core.errors import SegdeskError

    assert loop.resolve_init("scratch") is None
    assert loop.resolve_init("starter") == demo.demo_model_dir()
    assert loop.resolve_init(str(demo.demo_model_dir())) == demo.demo_model_dir()
    with pytest.raises(SegdeskError, match="scratch, starter or a models folder"):
        loop.resolve_init(str(tmp_path / "nowhere"))
