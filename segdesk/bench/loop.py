"""``segdesk bench loop``: a simulated clinician labels N images while the model learns.

The run goes through the app's own code: a real project on disk (``Project``), labels saved with
``Project.accept``, one long-lived ``Trainer`` that re-reads the labels and trains for a fixed
budget after each image, and proposals from the newest checkpoint through ``Predictor``, exactly
as the inference worker loads them. Only the clinician is simulated: for each image, in an order
fixed by the seed,

1. the current model proposes P (nothing before the first checkpoint exists);
2. P is compared with the true mask G: Dice, correction effort E(P, G) and scratch effort S(G)
   (segdesk.core.effort, DESIGN.md "Measuring"), at the image's own resolution; beside them the
   older region measure (``region_effort``, ``region_scratch_effort``), so runs stay comparable
   with those made before the effort measure changed;
3. G is accepted, and the trainer runs for ``train_seconds`` or ``train_steps``.

With ``order="uncertain"`` (active learning, as the app's "least sure first"), the images are the
same but their order is not fixed: before each image after the first, the current model predicts
up to ``ORDER_SAMPLE`` of the remaining images, drawn at random (seeded), and the least sure
(segdesk.ml.uncertainty) is labelled next; before the first model exists, the given order holds.
Each image records its score and how many were scored (``order_scored``), and the time it took
(``order_s``, not counted in ``proposal_s``).

Summary: effort ratio sum(E) / sum(S) (1.0 = no better than drawing from scratch) and the region
effort ratio, mean Dice of what the last ten images were shown (``dice_last10``: a withheld
proposal is an empty one) and of the model's own proposals (``dice_last10_model``), and the time
spent. Training runs on the same number of CPU threads as in the app (all cores but one), so
seconds-budget figures depend on the machine and its load; a steps budget makes runs comparable
across machines.

With ``clicks=True`` (``--clicks``), after each proposal is scored the simulated user also clicks
it toward the truth with the clicks protocol (segdesk.bench.clicks), then accepts the truth as
always: each image records NoC@90, Dice after 1, 3 and 5 clicks and the effort left after them, and
the summary gives NoC@90 over images 1-10, 11-20 and 21-30.

Post-processing (segdesk.ml.postprocess) is chosen by the trainer for each checkpoint it saves, on
its held-out accepted images, as nnU-Net chooses it, and stored in the checkpoint's metadata. That
choice also withholds proposals while, on the held-out images, they cost more to correct than
drawing from scratch. Each image records the shown proposal's figures and
those without the gate (``*_no_gate``) and without any post-processing (``*_raw``), so one run
measures all three.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from segdesk.bench.loop_report import plot, ratio, summarise
from segdesk.bench.provenance import code_version, machine
from segdesk.core import effort as fx
from segdesk.core.encoding import label_to_mask, mask_to_label, mean_dice
from segdesk.core import imageio, storage
from segdesk.core.errors import SegdeskError

log = logging.getLogger(__name__)

ORDERS = ("given", "uncertain")
ORDER_SAMPLE = 8  # remaining images the current model scores per step with order "uncertain"


def find_pairs(data: Path) -> list[tuple[str, Path, Path]]:
    """(stem, image path, mask path) for every image in data/images with a PNG in data/masks."""
    data = Path(data)
    images_dir, masks_dir = data / "images", data / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise SegdeskError(f"{data} needs images/ and masks/ folders (same file stems; masks 0 = background, 1..K = class).")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() == ".png"}
    pairs = [(p.stem, p, masks[p.stem]) for p in sorted(images_dir.iterdir())
             if p.suffix.lower() in imageio.SUPPORTED_SUFFIXES and p.stem in masks]
    if not pairs:
        raise SegdeskError(f"{data}: no image in images/ has a mask of the same stem in masks/.")
    return pairs


def shown_proposal(predictor, pixels: np.ndarray):
    """(prediction, raw classes, the proposal shown, the proposal without the gate) of ``pixels`` by
    ``predictor`` (segdesk.ml.inference.Predictor). The Predictor applies its post-processing
    itself; here it is applied after the call (the same function) so the raw proposal can be scored
    too."""
    from segdesk.ml import postprocess as pp

    spec, predictor.postprocess = predictor.postprocess, None
    try:
        prediction = predictor.predict(pixels)
    finally:
        predictor.postprocess = spec
    raw = prediction.classes
    area = predictor.area_factor(*raw.shape)  # the spec's areas in this image's pixels
    return (prediction, raw, pp.apply(raw, spec, area, unsure=prediction.uncertainty),
            pp.apply(raw, spec, area, gate=False))


def read_mask(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise SegdeskError(f"Could not read the mask {path}.")
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.dtype != np.uint8:
        if int(mask.max()) > 254:
            raise SegdeskError(f"{path} has values above 254; masks hold 0 = background, 1..K = class.")
        mask = mask.astype(np.uint8)
    return mask


def _seed_from(source, store) -> str:
    """Copy the current checkpoint of ``source`` (a models folder) into ``store``; its id."""
    from segdesk.ml.checkpoints import CheckpointStore

    found = CheckpointStore(source).load_current()
    if found is None:
        raise SegdeskError(f"No loadable checkpoint in {source}.")
    checkpoint_id, state_dict, meta = found
    # not its post-processing (chosen for another project); save writes id, times and hash anew
    keep = {k: v for k, v in meta.items() if k != "postprocess"}
    keep["parent"] = f"{Path(source).name}/{checkpoint_id}"
    return store.save(state_dict, keep)


def resolve_init(init: str) -> Path | None:
    """None for "scratch"; the bundled nuclei model's folder for "starter"; else a models folder."""
    if init in (None, "", "scratch"):
        return None
    if init == "starter":
        from segdesk.demo import demo_model_dir

        return demo_model_dir()
    path = Path(init).expanduser()
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise SegdeskError(f"--init must be scratch, starter or a models folder; {init!r} is none of these.")
    return path


def validation_effort(predictor, project, validation_ids: list[str]) -> tuple[float | None, float | None]:
    """sum(E) / sum(S) of the predictor's post-processed (never withheld) proposals on held-out
    accepted images, at full resolution: a check of the gate's working-scale estimate. Returns
    the effort ratio and the region effort ratio."""
    from segdesk.ml import postprocess

    e = s = region_e = region_s = 0.0
    for image_id in validation_ids:
        label = project.read_label(image_id)
        if label is None:
            continue
        truth = label_to_mask(label)
        spec, predictor.postprocess = predictor.postprocess, None
        try:
            raw = predictor.predict(project.read_image(project.image(image_id)).pixels).classes
        finally:
            predictor.postprocess = spec
        proposal = postprocess.apply(raw, spec, predictor.area_factor(*raw.shape), gate=False)
        e += fx.effort(proposal, truth)
        s += fx.scratch_effort(truth)
        region_e += fx.region_effort(proposal, truth)
        region_s += fx.region_scratch_effort(truth)
    return ratio(e, s), ratio(region_e, region_s)


ORDER_RULES = {
    "given": "the seed's permutation of the data folder's images",
    "uncertain": (f"the first image as given; then, while a model exists, the current model predicts up to "
                  f"{ORDER_SAMPLE} of the remaining images drawn at random (seeded) and the least sure "
                  "(segdesk.ml.uncertainty: mean 1 - confidence where it found something or hesitated) is "
                  "labelled next; before the first model, the given order"),
}


def least_sure(predictor, project, remaining: list, rng: np.random.Generator) -> tuple[int, dict[str, float]]:
    """Index in ``remaining`` ((stem, entry) pairs) of the image the predictor is least sure of,
    among at most ORDER_SAMPLE drawn at random, and the scores by image id. Ties: the first given."""
    sample = sorted(int(k) for k in rng.choice(len(remaining), size=min(ORDER_SAMPLE, len(remaining)), replace=False))
    scores = {}
    spec, predictor.postprocess = predictor.postprocess, None  # raw classes: scored as labelled images are
    try:
        for k in sample:
            entry = remaining[k][1]
            prediction = predictor.predict(project.read_image(entry).pixels)
            scores[entry.id] = prediction.uncertainty
    finally:
        predictor.postprocess = spec
    best = max(sample, key=lambda k: (scores[remaining[k][1].id], -k))
    return int(best), scores


def score(proposal: np.ndarray, truth: np.ndarray, suffix: str = "") -> dict:
    """Dice, effort and region effort of one proposal, keys ending in ``suffix``."""
    return {
        f"dice{suffix}": round(mean_dice(proposal, truth), 4),
        f"effort{suffix}": round(fx.effort(proposal, truth), 1),
        f"region_effort{suffix}": round(fx.region_effort(proposal, truth), 1),
    }


def run(
    data: str | Path,
    out: str | Path | None = None,
    images: int = 30,
    train_seconds: float | None = 30.0,
    train_steps: int | None = None,
    device: str | None = None,
    init: str = "scratch",
    seed: int = 0,
    overrides: dict | None = None,
    postprocess: bool = True,
    keep: str | Path | None = None,
    threads: int | None = None,
    on_image: Callable[[dict], None] | None = None,
    order: str = "given",
    clicks: bool = False,
    pretrain_steps: int = 0,
) -> dict:
    """Run the simulated clinician; write ``out`` (JSON) and its PNG when given; return the result.
    ``order``: "given" (fixed by the seed) or "uncertain" (the least sure of a sample next).
    ``clicks``: also run the clicks protocol on each proposal (segdesk.bench.clicks).
    ``pretrain_steps``: once the first image is accepted (its label plans the working scale), the
    trainer learns this many steps from the images alone (segdesk.ml.pretrain) before it trains
    on the label; the time it takes is reported, not counted in the per-image budget."""
    import torch

    from segdesk.bench.clicks import run_clicks, summarise_clicks
    from segdesk.core.project import Project
    from segdesk.ml import device as ml_device
    from segdesk.ml import postprocess as pp
    from segdesk.ml.checkpoints import CheckpointStore
    from segdesk.ml.config import TrainConfig
    from segdesk.ml.inference import Predictor
    from segdesk.ml.train import Trainer

    if (train_seconds is None) == (train_steps is None):
        raise SegdeskError("Give exactly one training budget per image: seconds or steps.")
    if order not in ORDERS:
        raise SegdeskError(f"Unknown order {order!r}: use one of {', '.join(ORDERS)}.")
    data = Path(data)
    pairs = find_pairs(data)
    permutation = np.random.default_rng(seed).permutation(len(pairs))[: max(1, images)]
    chosen = [pairs[i] for i in permutation]
    truths = {stem: read_mask(m) for stem, _, m in chosen}
    n_classes = max(1, max(int(t.max()) for t in truths.values()))
    config = TrainConfig(**{"seed": seed, **(overrides or {})})
    torch_device = ml_device.pick_device(device)
    if threads:
        torch.set_num_threads(threads)
    else:
        ml_device.limit_cpu_threads()  # as the app's workers: all cores but one
    n_threads = torch.get_num_threads()
    init_dir = resolve_init(init)

    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="segdesk-bench-loop-"))
    start = time.perf_counter()
    try:
        project = Project.create(work / "project", [f"class {k}" for k in range(1, n_classes + 1)])
        report = project.add_images([p for _, p, _ in chosen])
        by_source = {Path(e.source).stem: e for e in report.added}
        entries = [(stem, by_source[stem]) for stem, _, _ in chosen if stem in by_source]
        for path, reason in report.skipped:
            log.warning("skipped %s: %s", path, reason)
        store = CheckpointStore(project.root / "models")
        if init_dir is not None:
            _seed_from(init_dir, store)
        trainer = Trainer(project.root, config, device=torch_device, init="current")
        pretrain_s = 0.0

        predictor, loaded_id, val_effort = None, None, (None, None)
        chosen_post: dict[str, dict] = {}
        records = []
        order_rng = np.random.default_rng([seed, 1])  # apart from the seed's image order and training
        remaining = list(entries)
        for i in range(len(entries)):
            current = store.current_id()
            if current is not None and current != loaded_id:
                predictor = Predictor.from_checkpoint(project.root / "models", device=torch_device)
                loaded_id = predictor.checkpoint
                if not postprocess:
                    predictor.postprocess = None
                elif predictor.postprocess is not None:  # chosen by the trainer when it saved the checkpoint
                    chosen_post[loaded_id] = predictor.postprocess
                val_effort = validation_effort(predictor, project, trainer.data.validation_ids)
            t0 = time.perf_counter()
            pick, scores = 0, {}
            if order == "uncertain" and predictor is not None and len(remaining) > 1:
                pick, scores = least_sure(predictor, project, remaining, order_rng)
            order_s = time.perf_counter() - t0
            stem, entry = remaining.pop(pick)
            truth = truths[stem]
            pixels = project.read_image(entry).pixels
            if truth.shape != pixels.shape[:2]:
                log.warning("skipped %s: mask %s does not match image %s", stem, truth.shape, pixels.shape[:2])
                continue
            t0 = time.perf_counter()
            if predictor is None:
                raw = proposal = ungated = np.zeros_like(truth)
            else:
                prediction, raw, proposal, ungated = shown_proposal(predictor, pixels)
                project.save_proposal(entry.id, mask_to_label(proposal), loaded_id,
                                      prediction.uncertainty)
            proposal_s = time.perf_counter() - t0
            post = (predictor.postprocess or {}) if predictor is not None else {}
            record = {
                "index": i + 1,
                "image": stem,
                "size": [int(truth.shape[1]), int(truth.shape[0])],
                "checkpoint": loaded_id if predictor is not None else None,
                "checkpoint_val_dice": predictor.meta.get("val_dice") if predictor is not None else None,
                "checkpoint_val_effort_ratio": val_effort[0] if predictor is not None else None,
                "checkpoint_val_region_effort_ratio": val_effort[1] if predictor is not None else None,
                "postprocess": post.get("classes"),
                "spec_val_effort_ratio": post.get("val_effort_ratio"),
                "spec_val_region_effort_ratio": post.get("val_region_effort_ratio"),
                "spec_val_uncertainty_max": post.get("val_uncertainty_max"),
                **score(proposal, truth),  # what the user was shown
                "scratch_effort": round(fx.scratch_effort(truth), 1),
                "region_scratch_effort": round(fx.region_scratch_effort(truth), 1),
                "slack_radius": fx.slack_radius(truth.shape),
                "proposal_s": round(proposal_s, 3),
                "withheld": bool(predictor is not None
                                 and pp.withholds_image(predictor.postprocess, prediction.uncertainty)),
                "unlike_held_out": bool(predictor is not None
                                        and pp.unlike_held_out(predictor.postprocess, prediction.uncertainty)),
                **score(ungated, truth, "_no_gate"),  # the model's own proposal
                **score(raw, truth, "_raw"),
            }
            if predictor is not None:  # of this proposal (segdesk.ml.uncertainty)
                record["proposal_uncertainty"] = prediction.uncertainty
            if order == "uncertain":
                record.update(uncertainty=scores.get(entry.id), order_scored=len(scores),
                              order_s=round(order_s, 3))
            if clicks:
                record.update(run_clicks(predictor, pixels, proposal, truth, key=stem))
            project.accept(entry.id, mask_to_label(truth), proposal_checkpoint=record["checkpoint"])
            t0 = time.perf_counter()
            steps_before = trainer.step_count
            if remaining:  # nothing learns from the last image before the run ends
                trainer.refresh_labels()
                if pretrain_steps and not trainer.step_count and not trainer.pretrained_steps:
                    trainer.pretrain(max_steps=pretrain_steps)  # at the scale the first label planned
                    pretrain_s = time.perf_counter() - t0
                    record["pretrain_s"] = round(pretrain_s, 1)
                    log.info("pretrained %d steps in %.0f s", pretrain_steps, pretrain_s)
                    t0 = time.perf_counter()
                trainer.run(max_steps=train_steps, max_seconds=train_seconds)
            record["train_s"] = round(time.perf_counter() - t0, 2)
            record["train_steps"] = trainer.step_count - steps_before
            record["val_dice"] = None if trainer.last_val[0] is None else round(trainer.last_val[0], 4)
            records.append(record)
            if on_image is not None:
                on_image(record)

        total = time.perf_counter() - start
        result = summarise(records)
        if clicks:
            result.update(summarise_clicks(records))
        result.update({
            "clicks": clicks,
            "benchmark": "loop",
            "data": str(data),
            "images": len(records),
            "n_classes": n_classes,
            "seed": seed,
            "order": order,
            "order_rule": ORDER_RULES[order],
            "budget": {"seconds": train_seconds} if train_seconds is not None else {"steps": train_steps},
            "init": init,
            "pretrain": {"steps": trainer.pretrained_steps, "seconds": round(pretrain_s, 1)},
            "postprocess": postprocess,
            "postprocess_chosen": chosen_post,
            "config": dataclasses.asdict(config),
            "working_scale": trainer.working_scale,  # None under a per-image rule
            "scale_rule": trainer.scale_rule.to_meta(),
            "augmentation": trainer.augmentation.to_meta(),
            "checkpoints": len(store.list()),
            "total_s": round(total, 1),
            "device": ml_device.device_name(torch_device),
            "threads": n_threads,
            "machine": machine(),
            "torch": torch.__version__,
            "segdesk": code_version(),
            "command": " ".join(sys.argv),
            "per_image": records,
        })
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        storage.atomic_write_json(out, result)
        plot(result, out.with_suffix(".png"))
    return result


