"""Training settings with their defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    crop_size: int = 256
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    depth: int = 4
    # 16 by measurement on a laptop-class CPU (see segdesk/ml/README or the bench): width 8 trains
    # barely faster (memory bound) but learns less, 32 is ~3x slower per step.
    base_width: int = 16
    val_every: int = 25  # steps between validations (and label re-checks)
    patience: int = 20  # validations without improvement before an open-ended run stops
    seed: int = 0
    working_scale: float | None = None  # None: chosen from the labels (planning.py)
