"""``segdesk bench clicks``: the clicks protocol replayed on a kept ``bench loop`` run.

A loop run kept with ``--keep DIR`` holds its project: every checkpoint it trained, and every image
accepted with its true mask. Each image of the run (its JSON) is proposed again with the checkpoint
the run showed it, post-processed and gated as the run did (``loop.shown_proposal``), and clicked
toward its accepted label with the clicks protocol (segdesk.bench.clicks), once for each variant
of the click answer asked for. Clicks never feed training, so the variants are compared on the
run's very models, in minutes where a new run per variant takes most of an hour; the default
variant gives a ``--clicks`` run's own NoC@90, image for image.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from segdesk.core import storage
from segdesk.bench.clicks import run_clicks, summarise_clicks
from segdesk.bench.loop import shown_proposal
from segdesk.bench.provenance import code_version, machine
from segdesk.core.encoding import label_to_mask
from segdesk.core.errors import SegdeskError
from segdesk.core.project import Project
from segdesk.ml.inference import Predictor

# variant -> the Predictor settings it changes (ml/inference.py): each switches one part of the
# click answer off
VARIANTS: dict[str, dict] = {
    "default": {},
    "no-fit": {"fit_clicks": False},  # the network's answer, not fitted to the clicks
    "no-tilt": {"honour_clicks": False},  # no tilt toward each click
    "whole-window": {"local_clicks_from": None},  # the answer on the whole window, not what touches the click
    "both-ways": {"monotone_clicks": False},  # a click may move pixels either way
}
SETTINGS = sorted({name for settings in VARIANTS.values() for name in settings})


def replay(run_json: Path, project_dir: Path, out: Path, variants: list[str],
           on_image: Callable[[dict], None] | None = None) -> dict:
    """Replay the run of ``run_json`` (``bench loop``'s result) on its kept project (``--keep DIR``:
    ``DIR`` or ``DIR/project``), each image once per variant; writes and returns the result."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SegdeskError(f"Unknown variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}.")
    try:
        run = json.loads(Path(run_json).read_text())
        rows = run["per_image"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SegdeskError(f"{run_json} is not a result of segdesk bench loop: {exc}") from exc
    project_dir = Path(project_dir)
    if not (project_dir / "project.json").is_file() and (project_dir / "project" / "project.json").is_file():
        project_dir = project_dir / "project"
    project = Project.open(project_dir, clean=False)
    by_stem = {Path(e.source).stem: e for e in project.images}
    start = time.perf_counter()
    predictor: Predictor | None = None
    defaults: dict = {}
    records: dict[str, list[dict]] = {v: [] for v in variants}
    per_image = []
    for row in rows:
        entry = by_stem.get(row["image"])
        label = project.read_label(entry.id) if entry is not None else None
        if label is None:
            raise SegdeskError(f"{project_dir} has no accepted label of {row['image']}: is it the project of this run?")
        truth = label_to_mask(label)
        pixels = project.read_image(entry).pixels
        checkpoint = row.get("checkpoint")
        if checkpoint is not None and (predictor is None or predictor.checkpoint != checkpoint):
            predictor = Predictor.from_checkpoint(project.root / "models", checkpoint)
            defaults = {name: getattr(predictor, name) for name in SETTINGS}  # the app's
            if run.get("postprocess") is False:  # the run showed every proposal as the model made it
                predictor.postprocess = None
        shown = shown_proposal(predictor, pixels)[2] if checkpoint is not None else np.zeros_like(truth)
        image = {"index": row["index"], "image": row["image"], "checkpoint": checkpoint}
        for variant in variants:
            record = {"index": row["index"], "scratch_effort": row["scratch_effort"]}
            if checkpoint is None:
                record.update(run_clicks(None, pixels, shown, truth, key=None))
            else:
                for name, value in {**defaults, **VARIANTS[variant]}.items():
                    setattr(predictor, name, value)
                record.update(run_clicks(predictor, pixels, shown, truth, key=(row["image"], variant)))
            records[variant].append(record)
            image[variant] = {k: v for k, v in record.items() if k not in ("index", "scratch_effort")}
        per_image.append(image)
        if on_image is not None:
            on_image(image)
    result = {
        "benchmark": "clicks",
        "run": str(run_json),
        "project": str(project_dir),
        "data": run.get("data"),
        "seed": run.get("seed"),
        "variants": {v: summarise_clicks(records[v]) for v in variants},
        "settings": {v: VARIANTS[v] for v in variants},
        "total_s": round(time.perf_counter() - start, 1),
        "machine": machine(),
        "segdesk": code_version(),
        "per_image": per_image,
    }
    storage.atomic_write_json(out, result)
    return result

