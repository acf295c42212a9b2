"""Training settings with their defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    # 128 by the loop benchmark (docs/benchmarks.md): at equal training time, 128-px crops (4.5x
    # the steps of 256) needed less correction (the model's effort ratio, N=20: 0.194 -> 0.187
    # nuclei, 0.31 -> 0.26 EM, 2.6 -> 2.1 polyps; at N=30, 30 s: within noise on nuclei, better on
    # EM and polyps). The working scale still keeps the median object at least 48 px wide
    # (planning.py), so a crop holds the object and its surroundings.
    crop_size: int = 128
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    depth: int = 4
    # Measured (tests/speed.py, depth 4, crop 256, batch 4, 1 CPU thread): width 8 0.44 s/step,
    # 16 0.84 s, 32 2.8 s. 16 has 4x the compute of 8 for 2x the time (8 is overhead-bound);
    # 32 costs 3.4x more per step, too slow for learning while the user labels on a laptop.
    base_width: int = 16
    # steps between validations (and label re-checks): 100 crops of 128 px take about as long as
    # 25 of 256 px did (~15 s on one laptop CPU core), so validation stays a small share of the time
    val_every: int = 100
    patience: int = 20  # validations without improvement before an open-ended run stops
    seed: int = 0
    # decay of the weight average that is judged and kept (weight_average.py); 0: the raw weights
    weight_average: float = 0.99
    working_scale: float | None = None  # None: chosen from the labels (planning.py)
    # flips and turns ({"flip_lr": False}, or text: "flip-ud,rot90", "all", "off"); overrides the
    # plan and the project setting (augment_plan.py)
    augmentation: dict | str | None = None
    # click prompts (segdesk.core.clicks): the model reads click maps and the previous mask, trained
    # with simulated clicks (click_training.py); False trains an automatic-only model as before
    clicks: bool = True
    click_share: float = 0.5  # share of training crops that carry clicks; the rest train the automatic proposal
    # number format of training's forward passes: auto (bf16 where the device computes it natively:
    # NVIDIA Ampere and later, CPUs with avx512_bf16 or AMX; else fp32), bf16 or fp32 (precision.py)
    precision: str = "auto"
