"""The bundled demo project and model: ``segdesk demo``.

``resources/demo/project`` is a small segdesk project (a dozen nuclei images from the 2018
Data Science Bowl, CC0; a few already accepted). ``resources/models/nuclei`` is a models folder whose
checkpoint was trained with ``segdesk train`` on other images of the same dataset (see
docs/benchmarks.md). ``create`` copies the project into the user's data folder and puts the model in
it as checkpoint 0001, so the first Segment press already proposes something sensible; the app then
goes on training from there.

A demo the user has worked on is never overwritten: a fresh copy goes beside it (demo-2, ...).

Maintainers rebuild the bundled project with ``python -m segdesk.demo build DSB_DIR`` (it picks the
images deterministically).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from segdesk.bundled import resource_path
from segdesk.core import storage
from segdesk.core.errors import SegdeskError

log = logging.getLogger(__name__)

MARKER = ".segdesk-demo.json"  # written at creation: what the pristine copy looked like


def demo_model_dir() -> Path:
    """The models folder of the bundled nuclei model (dsb2018, CC0). It is the demo's model and
    what ``segdesk bench loop --init starter`` starts from; new projects start from fresh weights,
    because starting from it did not help on the other modalities (docs/benchmarks.md)."""
    return resource_path("models", "nuclei")


def data_home() -> Path:
    """segdesk's per-user data folder (what Qt calls AppDataLocation), without importing Qt.
    ``SEGDESK_DATA_DIR`` overrides it."""
    override = os.environ.get("SEGDESK_DATA_DIR")
    if override:
        return Path(override).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming") / "segdesk"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "segdesk"
    return Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share") / "segdesk"


def _signature(root: Path) -> str:
    """A digest of what the user changes by working: project file, labels and models."""
    h = hashlib.sha256()
    files = [root / "project.json"] + sorted((root / "labels").glob("*")) + sorted((root / "models").glob("*"))
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def is_pristine(root: Path) -> bool:
    """True when ``root`` is a demo created by segdesk and unchanged since."""
    try:
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("signature") == _signature(root)


def _free_demo_path(parent: Path) -> tuple[Path, Path | None]:
    """(where to create a demo, an existing pristine demo to reuse or None)."""
    first = parent / "demo"
    for n in range(1, 1000):
        path = first if n == 1 else parent / f"demo-{n}"
        if not path.exists():
            return path, None
        if (path / "project.json").is_file() and is_pristine(path):
            return path, path
    raise SegdeskError(f"Too many demo copies in {parent}; remove some.")


def create(into: str | Path | None = None) -> Path:
    """Create the demo project and return its folder.

    ``into`` None: in the data folder, as ``demo`` (reused if it is an untouched demo, else a new
    ``demo-2``, ...). ``into`` given: exactly there; it must not exist yet, or be an untouched demo.
    """
    from segdesk.core.project import Project

    source = resource_path("demo", "project")
    if not (source / "project.json").is_file():
        raise SegdeskError(f"The bundled demo project is incomplete ({source}).")
    if into is None:
        target, reuse = _free_demo_path(data_home())
    else:
        target = Path(into).expanduser()
        reuse = target if (target / "project.json").is_file() and is_pristine(target) else None
        if reuse is None and target.exists() and any(target.iterdir()):
            raise SegdeskError(f"{target} already exists and is not an untouched demo; choose another folder.")
    if reuse is not None:
        log.info("reusing the untouched demo in %s", reuse)
        return reuse.resolve()

    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(source, staging)
        for sub in ("labels", "proposals", "models"):
            (staging / sub).mkdir(exist_ok=True)
        _install_model(demo_model_dir(), staging / "models")
        Project.open(staging)  # fails here, not in the user's face, if the copy is broken
        if target.exists():  # an empty folder the caller named
            target.rmdir()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
    except OSError as exc:
        raise SegdeskError(f"Could not create the demo project in {target}: {exc.strerror or exc}.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    storage.atomic_write_json(target / MARKER, {"signature": _signature(target)})
    return target.resolve()


def _install_model(models_source: Path, models_target: Path) -> str:
    """Copy the current checkpoint of ``models_source`` into a project's models folder, with its
    ONNX export (best effort), so its CPU proposals run through ONNX Runtime like a trained one's."""
    from segdesk.ml.checkpoints import CheckpointStore
    from segdesk.ml.unet import UNet

    found = CheckpointStore(models_source).load_current()
    if found is None:
        raise SegdeskError(f"The bundled model in {models_source} does not load.")
    checkpoint_id, state_dict, meta = found
    meta = dict(meta)  # id, times and weights hash are the store's own: save writes them anew
    meta["parent"] = f"bundled:{models_source.name}/{checkpoint_id}"
    model = UNet.from_arch(meta["arch"])
    model.load_state_dict(state_dict)
    return CheckpointStore(models_target).save(state_dict, meta, onnx_model=model.eval())


def latest_worked_on(parent: Path | None = None) -> Path | None:
    """The newest demo copy in the data folder that the user has changed, or None."""
    parent = parent or data_home()
    found = None
    for n in range(1, 1000):
        path = parent / ("demo" if n == 1 else f"demo-{n}")
        if not path.exists():
            break
        if (path / "project.json").is_file() and not is_pristine(path):
            found = path
    return found


def run_gui(into: str | Path | None = None) -> int:
    """``segdesk demo``: create (or, if the user says so, reopen) the demo and open the app on it."""
    from segdesk.app import check_display, run_app

    check_display()
    from PySide6.QtWidgets import QApplication, QMessageBox

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("segdesk")
    app.setOrganizationName("segdesk")
    worked_on = latest_worked_on() if into is None else None
    if worked_on is not None:
        box = QMessageBox(QMessageBox.Icon.Question, "segdesk demo",
                          f"You have worked on the demo project in {worked_on}.\n\n"
                          "Continue with it, or start a fresh copy beside it?")
        keep = box.addButton("Continue my demo", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Fresh copy", QMessageBox.ButtonRole.ActionRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        if clicked is keep:
            return run_app(str(worked_on))
        if box.buttonRole(clicked) == QMessageBox.ButtonRole.RejectRole:
            return 0
    root = create(into)
    print(root)
    return run_app(str(root))


# ----- building the bundled project (maintainers)

N_GRAY, N_COLOUR, N_ACCEPTED = 9, 3, 3
N_ACCEPTED_GRAY = 2  # the accepted images are like those the user labels next: mostly gray


def build(dsb_dir: str | Path, out: str | Path | None = None, seed: int = 0) -> Path:
    """Rebuild ``resources/demo/project`` from a dsb2018_nuclei folder (images/, masks/,
    instances/): 9 fluorescence images of 256 x 256 (stored as 8-bit gray) and 3 brightfield /
    histology images of 320 x 256 (RGB; the constant alpha channel dropped), each with 10 to 80
    nuclei. The first three are accepted from their true masks: two gray and one colour, arranged
    so that the one the trainer holds out to judge its models by (segdesk.ml.data.held_out_ids) is
    gray and training sees both kinds. The colour images among the rest are spread through them,
    so the images the user meets next are mixed as the whole set is. Returns the project folder."""
    import itertools

    from segdesk.ml.data import held_out_ids

    dsb = Path(dsb_dir)
    out = Path(out) if out else resource_path("demo") / "project"
    gray, colour = _pick(dsb, seed)
    first = gray[:N_ACCEPTED_GRAY] + colour[:N_ACCEPTED - N_ACCEPTED_GRAY]
    rest = _spread(gray[N_ACCEPTED_GRAY:], colour[N_ACCEPTED - N_ACCEPTED_GRAY:])
    for accepted in itertools.permutations(first):  # image ids hash the file name: try each arrangement
        ids, files = _write_project(dsb, out, list(accepted) + rest)
        held = set(held_out_ids(ids[:N_ACCEPTED]))
        if all(files[ids.index(i)][1] in gray for i in held):
            break
    else:
        raise SegdeskError("No arrangement of the accepted demo images holds out a gray one.")

    def status(i: int) -> str:
        return "new" if i >= N_ACCEPTED else "accepted, held out" if ids[i] in held else "accepted"

    lines = [f"| {t.name} | {o.stem} | {'gray' if o in gray else 'colour'} | {status(i)} |"
             for i, (t, o) in enumerate(files)]
    (out.parent / "IMAGES.md").write_text(
        "# Demo images and their dsb2018 origin\n\n"
        "\"held out\": the accepted image the trainer validates on (segdesk.ml.data.held_out_ids).\n\n"
        "| file | dsb2018 stage1_train id | kind | status |\n|---|---|---|---|\n"
        + "\n".join(lines) + "\n", encoding="utf-8")
    return out


def _pick(dsb: Path, seed: int) -> tuple[list[Path], list[Path]]:
    """The demo's gray and colour originals, each list in a seeded random order."""
    import cv2
    import numpy as np

    gray, colour = [], []
    for path in sorted((dsb / "images").glob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        instances = cv2.imread(str(dsb / "instances" / path.name), cv2.IMREAD_UNCHANGED)
        n = len(np.unique(instances)) - 1 if instances is not None else 0
        if not 10 <= n <= 80:
            continue
        rgb = image[:, :, :3]
        is_gray = bool((rgb == rgb[:, :, :1]).all())
        if is_gray and image.shape[:2] == (256, 256):
            gray.append(path)
        elif not is_gray and image.shape[:2] == (256, 320):
            colour.append(path)
    rng = np.random.default_rng(seed)
    picked = [gray[i] for i in rng.choice(len(gray), N_GRAY, replace=False)]
    picked += [colour[i] for i in rng.choice(len(colour), N_COLOUR, replace=False)]
    order = [picked[i] for i in rng.permutation(len(picked))]
    return [p for p in order if p in gray], [p for p in order if p in colour]


def _spread(many: list, few: list) -> list:
    """``many`` with ``few`` placed evenly among them (one near each 1/len(few) of the list)."""
    n = len(many) + len(few)
    slots = {round((k + 0.5) * n / len(few)): item for k, item in enumerate(few)} if few else {}
    rest = iter(many)
    return [slots[i] if i in slots else next(rest) for i in range(n)]


def _write_project(dsb: Path, out: Path, order: list[Path]) -> tuple[list[str], list[tuple[Path, Path]]]:
    """The project in ``out`` with the images of ``order`` as nuclei-01.png, ..., the first
    N_ACCEPTED accepted from their true masks. Returns the image ids and (file in the project,
    original) pairs, both in that order."""
    import cv2
    import numpy as np

    from segdesk.core.project import Project

    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    files = []
    for i, path in enumerate(order, 1):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, :3]
        if bool((image == image[:, :, :1]).all()):
            image = image[:, :, 0]
        target = out / "images" / f"nuclei-{i:02d}.png"
        cv2.imwrite(str(target), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        files.append((target, path))
    project = Project.create(out, ["nucleus"])
    project.name = "segdesk demo: nuclei"
    project.add_images([f for f, _ in files])
    for entry, (_, original) in zip(project.images[:N_ACCEPTED], files):
        mask = cv2.imread(str(dsb / "masks" / original.name), cv2.IMREAD_UNCHANGED)
        project.accept(entry.id, (mask > 0).astype(np.uint8) + 1)
    (out / "log.jsonl").unlink(missing_ok=True)
    return [e.id for e in project.images], files


def bundle_model(models_dir: str | Path, out: str | Path | None = None, note: str = "") -> Path:
    """Store the current checkpoint of ``models_dir`` as the bundled nuclei model, with float16
    weights (half the size; they load into the float32 model unchanged in practice)."""
    import torch

    from segdesk.ml.checkpoints import CheckpointStore

    found = CheckpointStore(models_dir).load_current()
    if found is None:
        raise SegdeskError(f"No loadable checkpoint in {models_dir}.")
    checkpoint_id, state_dict, meta = found
    out = Path(out) if out else resource_path("models") / "nuclei"
    shutil.rmtree(out, ignore_errors=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    meta = {k: v for k, v in meta.items() if k != "parent"}  # save writes id, times and hash anew
    meta.update({"stored_dtype": str(torch.float16).removeprefix("torch."), "trained_as": f"{Path(models_dir).parent.name}/{checkpoint_id}",
                 "note": note})
    CheckpointStore(out).save(half, meta)
    return out


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "build":
        print(build(sys.argv[2]))
    elif len(sys.argv) >= 3 and sys.argv[1] == "bundle-model":
        print(bundle_model(sys.argv[2], note=" ".join(sys.argv[3:])))
    else:
        print("usage: python -m segdesk.demo build DSB2018_NUCLEI_DIR | bundle-model MODELS_DIR [NOTE]",
              file=sys.stderr)
        sys.exit(2)
