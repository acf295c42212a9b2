"""``segdesk bench latency``: time from "Segment" to mask per image size, with the model's FLOPs.

Each size runs the proposal path of the app's inference worker (``Predictor.predict``: per-image
normalisation, tiles of 512 px with 25 % overlap and cosine blending, softmax, argmax,
post-processing) on a random colour image at working scale 1 (the slowest case: a project whose
objects are large is planned at a smaller scale and runs faster). The model is the default U-Net
with fresh weights: speed does not depend on the weights. One warm-up run per size also counts the
FLOPs (``torch.utils.flop_counter``: convolutions and matrix products, 2 FLOPs per multiply-add,
blending and resizing not counted), then the median of ``repeats`` timed runs is reported with the
achieved FLOP/s, the figure to set against the device's peak.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from segdesk.bench.loop import code_version, machine


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def run(
    out: str | Path | None = None,
    sizes: list[int] = (512, 1024, 2048, 4096),
    device: str | None = None,
    repeats: int = 3,
    base_width: int | None = None,
    threads: int | None = None,
    on_size: Callable[[dict], None] | None = None,
) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from segdesk.ml import device as ml_device
    from segdesk.ml.config import TrainConfig
    from segdesk.ml.inference import Predictor, tile_boxes

    if threads:
        torch.set_num_threads(threads)
    else:
        ml_device.limit_cpu_threads()  # as the app's inference worker
    config = TrainConfig(**({"base_width": base_width} if base_width else {}))
    predictor = Predictor.untrained(1, config, device=device)
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        tiles = len(tile_boxes(size, size, predictor.tile))
        with FlopCounterMode(display=False) as counter:  # the warm-up run
            predictor.predict(image)
        flops = float(counter.get_total_flops())
        times = []
        for _ in range(repeats):
            _sync(predictor.device)
            start = time.perf_counter()
            predictor.predict(image)
            _sync(predictor.device)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        row = {
            "size": size,
            "tiles": tiles,
            "seconds": round(seconds, 4),
            "seconds_all": [round(t, 4) for t in times],
            "gflop": round(flops / 1e9, 2),
            "gflop_per_s": round(flops / seconds / 1e9, 2),
            "megapixels_per_s": round(size * size / seconds / 1e6, 3),
        }
        rows.append(row)
        if on_size is not None:
            on_size(row)
    result = {
        "benchmark": "latency",
        "sizes": rows,
        "model": predictor.model.arch_dict(),
        "working_scale": predictor.working_scale,
        "tile": predictor.tile,
        "repeats": repeats,
        "device": ml_device.device_name(predictor.device),
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "torch": torch.__version__,
        "segdesk": code_version(),
        "command": " ".join(sys.argv),
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        plot(result, out.with_suffix(".png"))
    return result


def plot(result: dict, path: Path) -> Path:
    from segdesk.bench import plot as charts

    rows = result["sizes"]
    ticks = [(i + 1, str(r["size"])) for i, r in enumerate(rows)]
    seconds = [r["seconds"] for r in rows]
    return charts.save([
        charts.Panel(f"segment time per image size (s, log scale) on {result['device']}",
                     [charts.Series("seconds", seconds, bars=True)], y_log=True,
                     y_range=(10 ** math.floor(math.log10(min(seconds))), 10 ** math.ceil(math.log10(max(seconds)))),
                     x_ticks=ticks, x_label="image side (px)"),
        charts.Panel("achieved GFLOP/s (model convolutions)",
                     [charts.Series("GFLOP/s", [r["gflop_per_s"] for r in rows], bars=True)],
                     x_ticks=ticks, x_label="image side (px)"),
    ], path)
