"""``segdesk demo --no-gui``: the bundled demo project is created, opens, and its model proposes."""

from pathlib import Path

import numpy as np
import pytest

from segdesk import demo
from segdesk.bundled import resource_path
from segdesk.cli import main
from segdesk.core.project import STATUS_ACCEPTED, Project


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDESK_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def make_demo(capsys, *extra) -> Path:
    code = main(["demo", "--no-gui", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return Path(out.strip().splitlines()[-1])


def test_demo_creates_a_project_that_opens_and_whose_model_proposes(data_home, capsys):
    from segdesk.ml.checkpoints import check_compatible
    from segdesk.ml.inference import Predictor

    root = make_demo(capsys)
    assert root == (data_home / "demo").resolve()
    project = Project.open(root)
    assert len(project.images) == 12 and project.classes[0].name == "nucleus"
    accepted = project.accepted_ids()
    assert 2 <= len(accepted) <= 3
    for entry in project.images:  # sources are inside the project: the copy is self-contained
        assert project.source_path(entry).is_relative_to(root)
        assert project.read_image(entry).pixels.shape[:2] == entry.shape

    predictor = Predictor.from_checkpoint(root / "models", device="cpu")
    check_compatible(predictor.meta, project.n_classes)
    assert predictor.engine == "onnxruntime" and predictor.engine_note is None  # installed with its export
    # "the first Segment press already proposes something sensible": on the accepted images the
    # bundled model agrees well with the labels
    for image_id in accepted:
        label = project.read_label(image_id)
        pred = predictor.predict(project.read_image(project.image(image_id)).pixels).classes
        truth = label == 2
        dice = 2 * np.count_nonzero((pred == 1) & truth) / (np.count_nonzero(pred == 1) + np.count_nonzero(truth))
        assert dice > 0.7, (image_id, dice)


def test_the_accepted_demo_images_are_like_the_ones_to_label():
    """Most demo images are gray fluorescence, a few colour histology. The accepted ones hold both
    kinds, the one the trainer holds out is gray, so fine-tuning sees both kinds and is judged on
    the kind the user labels most (trained on colour only, the bundled model forgot gray images)."""
    from segdesk.ml.data import held_out_ids

    project = Project.open(resource_path("demo", "project"), clean=False)
    gray = {e.id: project.read_image(e).pixels.ndim == 2 for e in project.images}
    accepted = project.accepted_ids()
    new = [i for i in gray if i not in accepted]
    assert sum(gray.values()) == 9
    assert [gray[i] for i in accepted].count(True) == 2 and [gray[i] for i in accepted].count(False) == 1
    held = held_out_ids(accepted)
    assert held and all(gray[i] for i in held)
    trained = [i for i in accepted if i not in held]
    assert {gray[i] for i in trained} == {True, False}
    assert not all(gray[i] for i in new[:4])  # a colour image comes soon after the accepted ones


def test_an_untouched_demo_is_reused_and_a_worked_on_one_is_kept(data_home, capsys):
    first = make_demo(capsys)
    assert make_demo(capsys) == first  # untouched: opened again, not copied again
    project = Project.open(first)
    entry = next(e for e in project.images if e.status != STATUS_ACCEPTED)
    project.accept(entry.id, np.ones(entry.shape, np.uint8))  # the user worked on it
    second = make_demo(capsys)
    assert second == (data_home / "demo-2").resolve()
    assert Project.open(first).image(entry.id).status == STATUS_ACCEPTED  # their work is still there
    assert demo.latest_worked_on() == first


def test_demo_refuses_a_folder_holding_something_else(tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code = main(["demo", "--no-gui", "--into", str(tmp_path / "busy")])
    _, err = capsys.readouterr()
    assert code == 1 and "already exists" in err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_bundled_resources_stay_small_and_ship_only_cc0_data():
    root = resource_path()
    files = [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) < 10 * 2**20
    text = " ".join((p.read_text(encoding="utf-8") for p in root.rglob("SOURCE.md"))).lower()
    assert "cc0" in text
    for forbidden in ("kvasir", "isbi"):  # never shipped, nor models trained on them
        assert not any(forbidden in p.name.lower() for p in files)
