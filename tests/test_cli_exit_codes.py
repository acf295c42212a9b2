"""Exit statuses of add, export and info say what happened, and stderr says which file and why."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from segdesk.cli import main
from segdesk.core.project import Project


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_png(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((16, 20), value, np.uint8))
    return path


def write_broken(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return path


@pytest.fixture
def proj(tmp_path, capsys) -> Path:
    root = tmp_path / "proj"
    assert run(capsys, "new", root, "--classes", "lesion")[0] == 0
    return root


# ----- add


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_add_from_a_folder_without_images_fails_and_says_so(tmp_path, proj, capsys, content):
    folder = tmp_path / "scans"
    folder.mkdir()
    if content:
        (folder / content).write_text("not an image")
    code, out, err = run(capsys, "add", proj, folder)
    assert code == 1
    assert err.splitlines() == [f"no images found in {folder}"]
    assert "added 0 images" in out


def test_a_folder_of_links_to_images_elsewhere_is_not_called_empty(tmp_path, proj, capsys):
    """A folder of symbolic links (a data set linked in, not copied): the project stores where the
    images really are, and the folder given still held images."""
    real = write_png(tmp_path / "store" / "a.png")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "a.png").symlink_to(real)
    code, out, err = run(capsys, "add", proj, tmp_path / "linked")
    assert (code, err) == (0, "")
    assert "added 1 image" in out


def test_add_of_nothing_readable_fails_with_one_line_per_file(tmp_path, proj, capsys):
    broken = write_broken(tmp_path / "broken.png")
    missing = tmp_path / "missing.png"
    code, out, err = run(capsys, "add", proj, broken, missing)
    assert code == 1
    lines = sorted(err.splitlines())
    assert len(lines) == 2 and "Traceback" not in err
    assert lines[0].startswith(f"skipped {broken}: ") and len(lines[0]) > len(f"skipped {broken}: ")
    assert lines[1] == f"skipped {missing}: no such file or folder"
    assert "added 0 images, skipped 2" in out
    assert Project.open(proj).images == []


def test_add_of_some_images_succeeds_and_names_the_skipped(tmp_path, proj, capsys):
    write_png(tmp_path / "in" / "a.png")
    broken = write_broken(tmp_path / "in" / "broken.png")
    code, out, err = run(capsys, "add", proj, tmp_path / "in")
    assert code == 0
    assert err.splitlines()[0].startswith(f"skipped {broken}: ") and err.count("\n") == 1
    assert "added 1 image, skipped 1" in out


def test_adding_a_folder_again_is_not_an_error(tmp_path, proj, capsys):
    write_png(tmp_path / "in" / "a.png")
    write_png(tmp_path / "in" / "b.png", value=120)
    assert run(capsys, "add", proj, tmp_path / "in")[0] == 0

    code, out, err = run(capsys, "add", proj, tmp_path / "in")
    assert (code, err) == (0, "")
    assert "added 0 images, 2 already in the project" in out

    write_png(tmp_path / "in" / "c.png", value=200)  # a new file in the folder: only it is added
    code, out, err = run(capsys, "add", proj, tmp_path / "in")
    assert (code, err) == (0, "")
    assert "added 1 image, 2 already in the project" in out
    assert len(Project.open(proj).images) == 3


def test_duplicates_do_not_hide_a_failure_when_nothing_is_added(tmp_path, proj, capsys):
    image = write_png(tmp_path / "a.png")
    assert run(capsys, "add", proj, image)[0] == 0
    code, out, err = run(capsys, "add", proj, image, tmp_path / "missing.png")
    assert code == 1
    assert err.splitlines() == [f"skipped {tmp_path / 'missing.png'}: no such file or folder"]
    assert "1 already in the project" in out


# ----- export


def _accepted_project(tmp_path, proj, capsys, n: int = 2) -> Project:
    for i in range(n):
        write_png(tmp_path / "in" / f"case{i}.png", value=40 * (i + 1))
    assert run(capsys, "add", proj, tmp_path / "in")[0] == 0
    project = Project.open(proj)
    for entry in project.images:
        label = np.ones(entry.shape, np.uint8)
        label[4:8, 4:8] = 2
        project.accept(entry.id, label)
    return project


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_export_that_skips_an_image_fails_but_writes_the_others(tmp_path, proj, capsys, damage):
    project = _accepted_project(tmp_path, proj, capsys)
    bad, good = project.images
    if damage == "missing":
        project.label_path(bad.id).unlink()
    else:
        project.label_path(bad.id).write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "export", proj, "--out", out_dir)
    assert code == 1
    (line,) = err.splitlines()
    assert line.startswith(f"skipped {bad.id}: ")
    assert ("label file is missing" if damage == "missing" else "not a readable PNG") in line
    assert "exported 1 mask " in out
    assert [p.name for p in out_dir.iterdir()] == [f"{Path(good.source).stem}.png"]


def test_export_of_every_image_succeeds(tmp_path, proj, capsys):
    _accepted_project(tmp_path, proj, capsys)
    code, out, err = run(capsys, "export", proj, "--out", tmp_path / "out")
    assert (code, err) == (0, "")
    assert "exported 2 masks" in out


def test_dicom_seg_export_that_skips_a_non_dicom_image_fails(tmp_path, proj, capsys):
    project = _accepted_project(tmp_path, proj, capsys, n=1)
    code, _, err = run(capsys, "export", proj, "--format", "dicom-seg", "--out", tmp_path / "out")
    assert code == 1
    (line,) = err.splitlines()
    assert line.startswith(f"skipped {project.images[0].id}: not a DICOM image")


# ----- info


def test_info_on_a_path_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "x" / "y"
    code, out, err = run(capsys, "info", missing)
    assert (code, out) == (1, "")
    assert err.splitlines() == [f"segdesk: error: {missing} does not exist"]


def test_info_on_a_folder_that_is_not_a_project(tmp_path, capsys):
    code, _, err = run(capsys, "info", tmp_path)
    assert code == 1
    (line,) = err.splitlines()
    assert line.startswith("segdesk: error: ") and "is not a segdesk project" in line


# ----- help


@pytest.mark.parametrize("command", ["add", "export", "info", "predict"])
def test_help_states_the_exit_statuses(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "Exit status: 0 " in text and "; 1 when" in text and "2 for a bad command line" in text


def test_bench_without_a_benchmark_is_a_bad_command_line(capsys):
    code, out, err = run(capsys, "bench")
    assert code == 2 and out == ""
    assert all(name in err for name in ("loop", "latency", "ui", "large", "brush"))
