"""The headless CLI, called in-process through segdesk.cli.main on small generated projects."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from segdesk.cli import main
from segdesk.cli.model import _TrainReport
from segdesk.core.project import Project
from segdesk.ml.checkpoints import CheckpointStore
from segdesk.ml.states import Progress

CLASSES = "disc,square"
TINY = ["--base-width", "4", "--depth", "2", "--crop", "32", "--batch", "2", "--val-every", "2",
        "--device", "cpu"]


def make_case(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A gray image with a bright disc (class 1) and a mid-grey square (class 2), and its mask."""
    h, w = shape
    image = rng.normal(40, 8, shape).clip(0, 255).astype(np.uint8)
    mask = np.zeros(shape, np.uint8)
    cy, cx = int(rng.integers(12, h - 12)), int(rng.integers(12, w - 12))
    cv2.circle(mask, (cx, cy), int(rng.integers(6, 10)), 1, -1)
    sy, sx = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
    mask[sy:sy + 7, sx:sx + 7] = 2
    image[mask == 1] = 200
    image[mask == 2] = 120
    return image, mask


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """images/ (6 PNGs + a corrupt file), masks/ for the first four images."""
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        image, mask = make_case(rng, (48, 48) if i % 2 == 0 else (40, 56))
        cv2.imwrite(str(root / "images" / f"case{i}.png"), image)
        if i < 4:
            cv2.imwrite(str(root / "masks" / f"case{i}.png"), mask)
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def make_project(tmp_path: Path, data: Path, capsys, labels: bool = True) -> Path:
    proj = tmp_path / "proj"
    assert run(capsys, "new", proj, "--classes", CLASSES)[0] == 0
    assert run(capsys, "add", proj, data / "images")[0] == 0
    if labels:
        assert run(capsys, "import-labels", proj, data / "masks")[0] == 0
    return proj


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ----- entry point and help


def test_python_dash_m_entry_point_prints_help():
    result = subprocess.run([sys.executable, "-m", "segdesk", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("new", "add", "import-labels", "train", "predict", "export", "info", "open"):
        assert command in result.stdout


@pytest.mark.parametrize("command, code", [(["info", "{proj}"], 1), (["--help"], 0)])
def test_a_reader_that_went_away_gets_no_traceback(tmp_path, capsys, command, code):
    """`segdesk info P | head -1`, where head has closed the pipe before segdesk writes: a quiet exit
    (1: not all was written; --help is argparse's, which ignores it)."""
    proj = tmp_path / "p"
    assert run(capsys, "new", proj, "--classes", "disc")[0] == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe fails with EPIPE from the first on
    try:
        result = subprocess.run([sys.executable, "-m", "segdesk"] + [a.format(proj=proj) for a in command],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == code and result.stderr == ""


def test_core_commands_import_neither_torch_nor_qt(tmp_path, data):
    script = f"""
import sys
from segdesk.cli import main
from segdesk.cli.model import _TrainReport
p = {str(tmp_path / "p")!r}
codes = [main(["new", p, "--classes", "disc,square"]), main(["add", p, {str(data / "images")!r}]),
         main(["import-labels", p, {str(data / "masks")!r}]),
         main(["export", p, "--out", {str(tmp_path / "out")!r}])]
assert codes == [0, 0, 0, 0], codes
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "PySide6"))
assert not heavy, heavy
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["new", "add", "import-labels", "train", "predict", "export",
                                     "info", "open"])
def test_every_command_has_help(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "usage: segdesk " + command in out


# ----- core commands (no model needed)


def test_new_add_import_export_round_trip(tmp_path, data, capsys):
    proj = tmp_path / "proj"
    code, out, err = run(capsys, "new", proj, "--classes", "disc,square:#ff0000")
    assert code == 0 and err == ""
    assert [(c.name, c.color) for c in Project.open(proj).classes][1] == ("square", "#ff0000")

    code, out, err = run(capsys, "add", proj, data / "images")
    assert code == 0
    assert "added 6 images" in out
    assert "broken.png" in err and err.count("\n") == 1  # one reason line for the corrupt file

    code, out, err = run(capsys, "import-labels", proj, data / "masks")
    assert code == 0, err
    assert "imported 4 masks" in out
    project = Project.open(proj)
    assert sorted(e.status for e in project.images) == ["accepted"] * 4 + ["new"] * 2
    case0 = next(e for e in project.images if Path(e.source).stem == "case0")
    mask0 = cv2.imread(str(data / "masks" / "case0.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(project.read_label(case0.id), mask0 + 1)  # label encoding: 1 = background

    # importing the same masks again changes nothing
    code, out, _ = run(capsys, "import-labels", proj, data / "masks")
    assert code == 0 and "imported 0 masks" in out and "4 unchanged" in out

    # a correction on an unaccepted image: painted pixels only
    case5 = next(e for e in project.images if Path(e.source).stem == "case5")
    partial = np.zeros(case5.shape, np.uint8)
    partial[:5, :5] = 3  # square
    partial[5:10, :5] = 1  # painted background
    project.save_label(case5.id, partial)

    out_dir = tmp_path / "export"
    code, out, err = run(capsys, "export", proj, "--out", out_dir)
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == [f"case{i}.png" for i in range(4)]
    for i in range(4):
        exported = cv2.imread(str(out_dir / f"case{i}.png"), cv2.IMREAD_UNCHANGED)
        original = cv2.imread(str(data / "masks" / f"case{i}.png"), cv2.IMREAD_UNCHANGED)
        assert exported.dtype == np.uint8 and np.array_equal(exported, original)

    code, _, _ = run(capsys, "export", proj, "--out", out_dir, "--include-in-progress")
    assert code == 0
    corrected = cv2.imread(str(out_dir / "case5.png"), cv2.IMREAD_UNCHANGED)
    expected = np.zeros(case5.shape, np.uint8)
    expected[:5, :5] = 2
    assert np.array_equal(corrected, expected)

    # the export imports back into a fresh project as the same labels
    proj2 = tmp_path / "proj2"
    run(capsys, "new", proj2, "--classes", CLASSES)
    run(capsys, "add", proj2, data / "images")
    (out_dir / "case5.png").unlink()
    code, out, _ = run(capsys, "import-labels", proj2, out_dir)
    assert code == 0 and "imported 4 masks" in out
    p1, p2 = Project.open(proj), Project.open(proj2)
    for e in p1.images:
        if e.status == "accepted":
            assert np.array_equal(p1.read_label(e.id), p2.read_label(e.id))


def test_export_names_images_with_the_same_stem_by_id(tmp_path, data, capsys):
    other = tmp_path / "other"
    other.mkdir()
    image, mask = make_case(np.random.default_rng(5), (48, 48))
    cv2.imwrite(str(other / "case0.png"), image)  # same stem as data/images/case0.png, new content
    proj = make_project(tmp_path, data, capsys)
    assert run(capsys, "add", proj, other)[0] == 0
    project = Project.open(proj)
    twin = [e for e in project.images if Path(e.source).stem == "case0"]
    assert len(twin) == 2
    project.accept(twin[1].id, mask + 1)

    out_dir = tmp_path / "export"
    assert run(capsys, "export", proj, "--out", out_dir)[0] == 0
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted([f"{twin[0].id}.png", f"{twin[1].id}.png", "case1.png", "case2.png",
                            "case3.png"])
    assert np.array_equal(cv2.imread(str(out_dir / f"{twin[1].id}.png"), cv2.IMREAD_UNCHANGED), mask)


def test_info_without_model(tmp_path, data, capsys):
    proj = make_project(tmp_path, data, capsys)
    code, out, err = run(capsys, "info", proj)
    assert code == 0, err
    info = json.loads(out)
    assert info["name"] == "proj"
    assert info["classes"] == [{"name": "disc", "colour": "#e69f00", "value": 1},
                               {"name": "square", "colour": "#56b4e9", "value": 2}]
    assert info["counts"] == {"new": 2, "in progress": 0, "accepted": 4}
    assert len(info["images"]) == 6
    sizes = {Path(i["source"]).stem: i["size"] for i in info["images"]}
    assert sizes["case1"] == {"width": 56, "height": 40}
    assert info["checkpoints"] == [] and info["current_model"] is None


# ----- error paths: non-zero exit, one line on stderr


def test_new_without_classes_is_a_usage_error(tmp_path, capsys):
    code, _, err = run(capsys, "new", tmp_path / "p")
    assert code == 2
    assert "--classes" in one_error_line(err)


@pytest.mark.parametrize("classes", ["", "lung,,heart", "lung,Lung", "background", "lung:red"])
def test_new_with_bad_class_list(tmp_path, capsys, classes):
    code, _, err = run(capsys, "new", tmp_path / "p", "--classes", classes)
    assert code == 1
    assert one_error_line(err).startswith("segdesk: error: ")
    assert not (tmp_path / "p" / "project.json").exists()


def test_new_on_an_existing_project(tmp_path, capsys):
    assert run(capsys, "new", tmp_path / "p", "--classes", "lung")[0] == 0
    code, _, err = run(capsys, "new", tmp_path / "p", "--classes", "heart")
    assert code == 1
    assert "already holds a project" in one_error_line(err)
    assert [c.name for c in Project.open(tmp_path / "p").classes] == ["lung"]


@pytest.mark.parametrize("command", [["add", "{p}", "x.png"], ["info", "{p}"],
                                     ["export", "{p}", "--out", "{t}/out"],
                                     ["import-labels", "{p}", "{t}"]])
def test_commands_on_a_missing_project(tmp_path, capsys, command):
    argv = [a.format(p=tmp_path / "nope", t=tmp_path) for a in command]
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert one_error_line(err) == f"segdesk: error: {tmp_path / 'nope'} does not exist"
    (tmp_path / "nope").mkdir()
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert "not a segdesk project" in one_error_line(err)


def test_import_labels_wrong_size_and_bad_values(tmp_path, data, capsys):
    proj = make_project(tmp_path, data, capsys, labels=False)
    masks = tmp_path / "masks"
    masks.mkdir()
    cv2.imwrite(str(masks / "case0.png"), np.zeros((20, 20), np.uint8))
    code, out, err = run(capsys, "import-labels", proj, masks)
    assert code == 1
    assert "case0.png" in one_error_line(err) and "20x20" in err and "48x48" in err
    assert "imported 0 masks" in out

    cv2.imwrite(str(masks / "case0.png"), np.full((48, 48), 3, np.uint8))  # 2 classes: values 0..2
    cv2.imwrite(str(masks / "case2.png"), cv2.imread(str(data / "masks" / "case2.png"), -1))
    cv2.imwrite(str(masks / "unknown.png"), np.zeros((48, 48), np.uint8))
    code, out, err = run(capsys, "import-labels", proj, masks)
    assert code == 1
    assert "holds value 3" in err and "no project image" in err
    assert "imported 1 mask " in out
    assert [e.status for e in Project.open(proj).images if Path(e.source).stem == "case0"] == ["new"]


@pytest.mark.parametrize("mask_dir", ["missing", "file.png", "empty"])
def test_import_labels_unreadable_mask_dir(tmp_path, data, capsys, mask_dir):
    proj = make_project(tmp_path, data, capsys, labels=False)
    (tmp_path / "file.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "import-labels", proj, tmp_path / mask_dir)
    assert code == 1
    assert one_error_line(err).startswith("segdesk: error: ")


def test_export_to_a_file_path(tmp_path, data, capsys):
    proj = make_project(tmp_path, data, capsys)
    target = tmp_path / "masks.png"
    target.write_bytes(b"")
    code, _, err = run(capsys, "export", proj, "--out", target)
    assert code == 1
    assert "is a file, not a folder" in one_error_line(err)


def test_bad_numbers_are_usage_errors(tmp_path, capsys):
    code, _, err = run(capsys, "train", tmp_path, "--steps", "0")
    assert code == 2 and "--steps" in one_error_line(err)
    code, _, err = run(capsys, "train", tmp_path, "--steps", "3", "--minutes", "1")
    assert code == 2 and "not allowed with" in one_error_line(err)


# ----- train, predict, info with a model (tiny config, a few CPU steps)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data) -> tuple[Path, int, str, str]:
    """A project with 4 accepted images, trained 4 tiny steps: (root, exit code, stdout, stderr)."""
    proj = tmp_path_factory.mktemp("trained") / "proj"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["new", str(proj), "--classes", CLASSES]) == 0
        assert main(["add", str(proj), str(data / "images")]) == 0
        assert main(["import-labels", str(proj), str(data / "masks")]) == 0
        out.seek(0), out.truncate(), err.seek(0), err.truncate()
        code = main(["train", str(proj), "--steps", "4", "--precision", "fp32", *TINY])
    return proj, code, out.getvalue(), err.getvalue()


def test_train_prints_checkpoint_and_dice(trained):
    proj, code, out, err = trained
    assert code == 0, err
    current = CheckpointStore(proj / "models").current_id()
    assert current is not None
    assert CheckpointStore(proj / "models").load(current)[1]["precision"] == "fp32"  # as asked
    assert f"checkpoint {current}" in out and "validation Dice" in out
    assert err.count("validation Dice") == 2  # not a terminal: one line per validation (every 2 steps)
    assert "\r" not in err


def test_info_lists_checkpoints(trained, capsys):
    trained = trained[0]
    code, out, err = run(capsys, "info", trained)
    assert code == 0, err
    info = json.loads(out)
    assert info["current_model"] == CheckpointStore(trained / "models").current_id()
    assert info["checkpoints"] and info["checkpoints"][-1]["id"] == info["current_model"]
    assert "val_dice" in info["checkpoints"][-1]


def test_predict_stores_proposals_and_writes_masks(trained, tmp_path, capsys):
    trained = trained[0]
    out_dir = tmp_path / "pred"
    code, out, err = run(capsys, "predict", trained, "--out", out_dir, "--device", "cpu")
    assert code == 0, err
    assert "stored 2 proposals" in out
    project = Project.open(trained)
    current = CheckpointStore(trained / "models").current_id()
    for e in project.images:
        proposal = project.read_proposal(e.id)
        if e.status == "accepted":
            assert proposal is None
            continue
        label, meta = proposal
        assert meta["checkpoint"] == current
        assert label.shape == e.shape and label.min() >= 1 and label.max() <= 3
        mask = cv2.imread(str(out_dir / (Path(e.source).stem + ".png")), cv2.IMREAD_UNCHANGED)
        assert mask.shape == e.shape and mask.dtype == np.uint8 and mask.max() <= 2
        assert np.array_equal(mask + 1, label)
    assert len(list(out_dir.iterdir())) == 2


def test_predict_files_outside_the_project(trained, data, tmp_path, capsys):
    trained = trained[0]
    other = tmp_path / "other"
    other.mkdir()
    image, _ = make_case(np.random.default_rng(9), (36, 44))
    cv2.imwrite(str(other / "new.png"), image)
    code, _, err = run(capsys, "predict", trained, other / "new.png")
    assert code == 1 and "--out" in one_error_line(err)

    out_dir = tmp_path / "pred"
    code, out, err = run(capsys, "predict", trained, other / "new.png", data / "images" / "broken.png",
                         "--out", out_dir)
    assert code == 1  # not all that was asked for: README's exit status
    assert "wrote 1 mask" in out and "skipped 1" in out and "broken.png" in err
    mask = cv2.imread(str(out_dir / "new.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (36, 44) and mask.max() <= 2

    # the order README gives: options between the project and the files, with no Python warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, _ = run(capsys, "predict", trained, "--out", tmp_path / "pred2", "--device", "cpu",
                           other / "new.png")
    assert code == 0 and "wrote 1 mask" in out
    assert np.array_equal(cv2.imread(str(tmp_path / "pred2" / "new.png"), cv2.IMREAD_UNCHANGED), mask)
    code, _, err = run(capsys, "predict", trained, "--out", out_dir, other / "new.png", "--bogus")
    assert code == 2 and "--bogus" in one_error_line(err)


def test_predict_when_every_image_is_accepted(trained, tmp_path, capsys):
    import shutil

    proj = tmp_path / "proj"
    shutil.copytree(trained[0], proj)
    project = Project.open(proj)
    for e in project.images:
        if e.status != "accepted":
            project.accept(e.id, np.ones(e.shape, np.uint8))
    code, out, err = run(capsys, "predict", proj, "--device", "cpu")
    assert code == 0, err
    assert out.startswith("nothing to propose: all 6 images of the project are accepted")


def test_predict_without_a_model(tmp_path, data, capsys):
    proj = make_project(tmp_path, data, capsys)
    code, _, err = run(capsys, "predict", proj, "--device", "cpu")
    assert code == 1
    assert one_error_line(err) == "segdesk: error: no trained model yet: run segdesk train first"


def test_train_without_labels(tmp_path, data, capsys):
    proj = make_project(tmp_path, data, capsys, labels=False)
    code, _, err = run(capsys, "train", proj, "--steps", "1", *TINY)
    assert code == 1
    assert "no labels to train on" in one_error_line(err)


@pytest.mark.parametrize("command", ["train", "predict"])
def test_unknown_device(tmp_path, data, capsys, command):
    proj = make_project(tmp_path, data, capsys)
    code, _, err = run(capsys, command, proj, "--device", "tpu")
    assert code == 1
    assert "'tpu'" in one_error_line(err) and one_error_line(err).startswith("segdesk: error: ")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal():
    stream = _Terminal()
    report = _TrainReport(stream, start_step=10, val_every=5, max_steps=20, max_seconds=None)
    report(Progress(15, 0.5, None, None, 12.0, None, "training"))
    report(Progress(20, 0.4, 0.61, [0.61], 12.5, "0003", "improved"))
    report(Progress(30, 0.3, 0.7, [0.7], 13.0, "0003", "stopped"))
    report.close()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n")
    assert "[" + "#" * 6 + "-" * 18 + "] step 5/20" in text  # a quarter done
    assert "step 20/20" in text and "Dice 0.700" in text


def test_predict_writes_the_masks_of_a_model_the_gui_holds_back(trained, tmp_path, capsys):
    """A model whose proposals cost more to correct than drawing shows none in the GUI; asked for
    masks in batch, the CLI writes its real masks and says it is still learning."""
    import shutil

    proj = tmp_path / "proj"
    shutil.copytree(trained[0], proj)
    store = CheckpointStore(proj / "models")
    checkpoint_id, weights, meta = store.load_current()
    meta = {k: v for k, v in meta.items() if k not in ("id", "created", "created_iso", "weights_sha256", "weights_bytes")}
    shown = store.save(weights, {**meta, "postprocess": {"version": 1, "classes": {}, "propose": True}})
    held = store.save(weights, {**meta, "postprocess": {"version": 1, "classes": {}, "propose": False,
                                                        "val_effort_ratio": 1.4}})
    masks = {}
    for name, cid in (("shown", shown), ("held", held)):
        code, out, err = run(capsys, "predict", proj, "--checkpoint", cid, "--out", tmp_path / name)
        assert code == 0, err
        assert ("still learning" in err and "1.4x" in err) == (name == "held")
        masks[name] = {f.name: cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in (tmp_path / name).iterdir()}
    assert masks["held"].keys() == masks["shown"].keys() and len(masks["held"]) == 2
    assert any(m.any() for m in masks["shown"].values())  # not an empty-mask tie
    for key, mask in masks["held"].items():
        assert np.array_equal(mask, masks["shown"][key])
