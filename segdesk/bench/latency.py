"""``segdesk bench latency``: time from "Segment" to mask per image size and engine, with the model's FLOPs.

Each size runs the proposal path of the app's inference worker (``Predictor.predict``: per-image
normalisation, tiles of 512 px with 25 % overlap and cosine blending, softmax, argmax,
post-processing) on a random colour image at working scale 1 (the slowest case: a project whose
objects are large is planned at a smaller scale and runs faster). The model is the default U-Net
with seeded fresh weights: speed does not depend on the weights. The engines (``torch``, today's
path; ``onnx``, ONNX Runtime on the model exported as the training worker exports it) run side by
side on the same image and model, their timed runs interleaved so that a busy machine slows them
alike. One warm-up run per size and engine; torch's also counts the FLOPs
(``torch.utils.flop_counter``: convolutions and matrix products, 2 FLOPs per multiply-add, blending
and resizing not counted). Per engine, the median of ``repeats`` timed runs, the achieved FLOP/s
(the figure to set against the device's peak), the ratio to torch's time and the Dice of its mask
against torch's. A row's top-level ``seconds`` and ``gflop_per_s`` are those of the engine the app
uses on this device (``engine``).

Clicks: per size and engine, the time of one click's answer (``Predictor.refine``, as the app's Click
tool runs it: a window around the click at working scale, merged into the previous mask) on the
image whose proposal was just made: ``click_s`` once the image's working input is kept (every click
after the first), ``first_click_s`` when it must be prepared (the first click on an image).
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from segdesk.bench.provenance import code_version, machine
from segdesk.core import storage

ENGINES = ("torch", "onnx")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _predictors(config, device, engines, folder: Path) -> dict:
    """{engine name: Predictor}, one model shared by all; ``onnx`` exported into ``folder``."""
    import torch

    from segdesk.ml import export_onnx
    from segdesk.ml.inference import Predictor

    torch.manual_seed(0)
    base = Predictor.untrained(1, config, device=device)
    predictors = {"torch": Predictor(base.model, base.meta, base.device, engine="torch")}
    if "onnx" in engines and base.device.type == "cpu":
        path = export_onnx.export(base.model, folder / "model.onnx")
        onnx = Predictor(base.model, base.meta, base.device, engine="onnx", onnx_path=path)
        predictors[onnx.engine] = onnx
    return predictors


def run(
    out: str | Path | None = None,
    sizes: list[int] = (512, 1024, 2048, 4096),
    device: str | None = None,
    repeats: int = 3,
    base_width: int | None = None,
    threads: int | None = None,
    on_size: Callable[[dict], None] | None = None,
    engines: list[str] = ENGINES,
) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from segdesk.core.encoding import mean_dice
    from segdesk.ml import device as ml_device
    from segdesk.ml.config import TrainConfig
    from segdesk.ml.tiling import tile_boxes

    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise ValueError(f"Unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}.")
    if threads:
        torch.set_num_threads(threads)
    else:
        ml_device.limit_cpu_threads()  # as the app's inference worker
    config = TrainConfig(**({"base_width": base_width} if base_width else {}))
    with tempfile.TemporaryDirectory(prefix="segdesk-latency-") as folder:
        predictors = _predictors(config, device, engines, Path(folder))
        reference = predictors["torch"]
        chosen = "onnxruntime" if "onnxruntime" in predictors else "torch"  # what "auto" runs here
        rng = np.random.default_rng(0)
        rows = []
        for size in sizes:
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            masks = {}
            with FlopCounterMode(display=False) as counter:  # torch's warm-up run
                masks["torch"] = reference.predict(image).classes
            flops = float(counter.get_total_flops())
            for name, predictor in predictors.items():
                if name != "torch":
                    masks[name] = predictor.predict(image).classes  # warm-up
            times = {name: [] for name in predictors}
            for _ in range(repeats):
                for name, predictor in predictors.items():  # interleaved: one run of each in turn
                    _sync(predictor.device)
                    start = time.perf_counter()
                    predictor.predict(image)
                    _sync(predictor.device)
                    times[name].append(time.perf_counter() - start)
            clicks = {name: _click_times(predictor, image, masks[name], repeats) for name, predictor in predictors.items()}
            torch_s = statistics.median(times["torch"])
            per_engine = {}
            for name, values in times.items():
                seconds = statistics.median(values)
                per_engine[name] = {
                    "seconds": round(seconds, 4),
                    "seconds_all": [round(t, 4) for t in values],
                    "gflop_per_s": round(flops / seconds / 1e9, 2),
                    "megapixels_per_s": round(size * size / seconds / 1e6, 3),
                    "speedup_vs_torch": round(torch_s / seconds, 2),
                    "dice_vs_torch": round(mean_dice(masks[name], masks["torch"]), 5),
                    **clicks[name],
                }
            row = {
                "size": size,
                "tiles": len(tile_boxes(size, size, reference.tile)),
                "gflop": round(flops / 1e9, 2),
                "engine": chosen,
                **{k: per_engine[chosen][k] for k in ("seconds", "seconds_all", "gflop_per_s", "megapixels_per_s",
                                                      "click_s", "first_click_s")},
                "engines": per_engine,
            }
            rows.append(row)
            if on_size is not None:
                on_size(row)
        notes = [p.engine_note for p in predictors.values() if p.engine_note]
    result = {
        "benchmark": "latency",
        "sizes": rows,
        "engines": list(predictors),
        "engine": chosen,
        "engine_notes": notes,
        "model": reference.model.arch_dict(),
        "working_scale": reference.working_scale,
        "tile": reference.tile,
        "repeats": repeats,
        "device": ml_device.device_name(reference.device),
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "segdesk": code_version(),
        "command": " ".join(sys.argv),
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        storage.atomic_write_json(out, result)
        plot(result, out.with_suffix(".png"))
    return result


def _click_times(predictor, image: np.ndarray, previous: np.ndarray, repeats: int) -> dict:
    """Median seconds of a click's answer near the image's centre (kept working input) and of a first click."""
    from segdesk.core.clicks import Click

    if not predictor.accepts_clicks:
        return {"click_s": None, "first_click_s": None}
    h, w = image.shape[:2]
    clicks = [Click(h // 2, w // 2, 1, True)]
    predictor.refine(image, clicks, previous, key="latency")  # warm-up, and keeps the working input
    kept, first = [], []
    for i in range(repeats):
        clicks.append(Click(h // 2 + 8 * (i + 1), w // 2, 1, i % 2 == 0))
        start = time.perf_counter()
        predictor.refine(image, clicks, previous, key="latency")
        kept.append(time.perf_counter() - start)
        start = time.perf_counter()
        predictor.refine(image, clicks, previous)  # no key: the working input is prepared again
        first.append(time.perf_counter() - start)
    return {"click_s": round(statistics.median(kept), 4), "first_click_s": round(statistics.median(first), 4)}


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def plot(result: dict, path: Path) -> Path:
    """Seconds and GFLOP/s per size, one bar per engine (older results without ``engines``: one bar)."""
    from segdesk.bench import plot as charts

    rows = result["sizes"]
    ticks = [(i + 1, str(r["size"])) for i, r in enumerate(rows)]
    names = list(rows[0]["engines"]) if rows and "engines" in rows[0] else []

    def series(key: str) -> list:
        if not names:
            return [charts.Series(key.replace("gflop_per_s", "GFLOP/s"), [r[key] for r in rows], bars=True)]
        return [charts.Series(name, [r["engines"].get(name, {}).get(key) for r in rows], bars=True) for name in names]

    seconds = [v for s in series("seconds") for v in s.y if v]
    return charts.save([
        charts.Panel(f"segment time per image size (s, log scale) on {result['device']}",
                     series("seconds"), y_log=True,
                     y_range=(10 ** math.floor(math.log10(min(seconds))), 10 ** math.ceil(math.log10(max(seconds)))),
                     x_ticks=ticks, x_label="image side (px)"),
        charts.Panel("achieved GFLOP/s (model convolutions)", series("gflop_per_s"),
                     x_ticks=ticks, x_label="image side (px)"),
    ], path)
