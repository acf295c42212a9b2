"""Training states in words, as the training panel shows them, and the progress a trainer reports.
No torch here: the GUI imports it."""

from __future__ import annotations

from dataclasses import dataclass

WAITING = "waiting for labels"
TRAINING = "training"
IMPROVED = "improved"
STOPPED = "stopped"
ERROR = "error"


@dataclass
class Progress:
    step: int
    loss: float
    val_dice: float | None
    val_dice_per_class: list[float | None] | None  # one per class; None where absent from the truth
    images_per_s: float
    checkpoint: str | None  # the newest checkpoint this trainer wrote or started from
    state: str  # WAITING, TRAINING, IMPROVED, STOPPED or ERROR
    augmentation: str | None = None  # the flips and turns in use, in words
    working_resolution: str | None = None  # the scale rule in use, in words
    precision: str | None = None  # training's number format: bf16 or fp32 (precision.py)
