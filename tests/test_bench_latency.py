"""``segdesk bench latency`` puts the engines side by side: same image, same model, both timed."""

import json

from segdesk.cli import main


def test_engines_side_by_side(tmp_path, capsys):
    out = tmp_path / "lat.json"
    code = main(["bench", "latency", "--sizes", "48", "--repeats", "2", "--base-width", "4",
                 "--device", "cpu", "--threads", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["engines"] == ["torch", "onnxruntime"] and result["engine"] == "onnxruntime"
    (row,) = result["sizes"]
    torch_, onnx = row["engines"]["torch"], row["engines"]["onnxruntime"]
    assert len(torch_["seconds_all"]) == len(onnx["seconds_all"]) == 2
    assert torch_["speedup_vs_torch"] == 1.0 and onnx["speedup_vs_torch"] > 0
    assert onnx["dice_vs_torch"] >= 0.999 and onnx["gflop_per_s"] > 0
    assert row["seconds"] == onnx["seconds"]  # the top-level figure is the engine the app uses
    # a click's answer, timed per engine (the model reads clicks)
    assert onnx["click_s"] > 0 and onnx["first_click_s"] > 0 and torch_["click_s"] > 0
    assert row["click_s"] == onnx["click_s"] and "a click's answer" in capsys.readouterr().out
    assert out.with_suffix(".png").is_file()


def test_unknown_engine_is_refused(capsys):
    assert main(["bench", "latency", "--engines", "tensorrt", "--out", "/nonexistent/x.json"]) != 0
    assert "tensorrt" in capsys.readouterr().err
