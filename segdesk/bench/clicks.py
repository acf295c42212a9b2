"""The clicks protocol of ``segdesk bench loop --clicks`` (DESIGN.md "Measuring", clicks).

For each image, after the automatic proposal is scored: the simulated user clicks where the
protocol says (segdesk.core.clicks.next_click: the point of the largest error region farthest from
its edge, positive or negative by what the truth says there), the model answers each click through
``Predictor.refine`` exactly as the app's Click tool does, until Dice >= 0.90 or MAX_CLICKS. NoC@90
is the number of clicks it took (0 when the proposal was already there; MAX_CLICKS when never,
and when no model that reads clicks exists yet, since then the user draws by hand).
"""

from __future__ import annotations

import time

import numpy as np

from segdesk.bench.loop_report import ratio
from segdesk.core import effort as fx
from segdesk.core.clicks import next_click
from segdesk.core.encoding import mean_dice

MAX_CLICKS = 20
TARGET_DICE = 0.90
REPORTED = (1, 3, 5)  # Dice after this many clicks
BLOCKS = ((1, 10), (11, 20), (21, 30))  # NoC@90 averaged over these images (1-based, inclusive)
# a click whose answer lowers Dice by more than this is a setback: what a user sees as the tool undoing
# their work (e.g. a "not this" next to the object that erases the object), and then clicks to repair
SETBACK = 0.1


def run_clicks(predictor, pixels: np.ndarray, shown: np.ndarray, truth: np.ndarray, key: object) -> dict:
    """Click until the target; the record's ``noc90``, ``dice_after_k`` (the Dice where clicking
    stopped carries forward), ``setbacks`` (clicks that lowered Dice by more than SETBACK),
    ``effort_after_clicks`` and the time per click."""
    current = shown
    dice = mean_dice(current, truth)
    dices = [dice]
    seconds: list[float] = []
    clicks = []
    usable = predictor is not None and predictor.accepts_clicks
    while usable and dice < TARGET_DICE and len(clicks) < MAX_CLICKS:
        click = next_click(current, truth)
        if click is None:
            break
        clicks.append(click)
        t0 = time.perf_counter()
        current = predictor.refine(pixels, clicks, current, key=key).classes
        seconds.append(time.perf_counter() - t0)
        dice = mean_dice(current, truth)
        dices.append(dice)
    reached = next((k for k, d in enumerate(dices) if d >= TARGET_DICE), None)
    record = {
        "noc90": reached if reached is not None else MAX_CLICKS,
        "clicks": len(clicks),
        "clicks_usable": usable,
        "setbacks": sum(1 for before, after in zip(dices, dices[1:]) if after < before - SETBACK),
        "effort_after_clicks": round(fx.effort(current, truth), 1),
        "click_s_median": round(float(np.median(seconds)), 3) if seconds else None,
    }
    for k in REPORTED:
        record[f"dice_after_{k}"] = round(dices[min(k, len(dices) - 1)], 4)
    return record


def summarise_clicks(records: list[dict]) -> dict:
    """NoC@90 per block of images, Dice after 1, 3 and 5 clicks, setbacks among the clicks, effort left
    after the clicks."""
    out: dict = {}
    for first, last in BLOCKS:
        block = [r["noc90"] for r in records if first <= r["index"] <= last and "noc90" in r]
        out[f"noc90_{first}_{last}"] = round(float(np.mean(block)), 2) if block else None
    with_clicks = [r for r in records if "noc90" in r]
    out["noc90_mean"] = round(float(np.mean([r["noc90"] for r in with_clicks])), 2) if with_clicks else None
    for k in REPORTED:
        values = [r[f"dice_after_{k}"] for r in with_clicks]
        out[f"dice_after_{k}"] = round(float(np.mean(values)), 4) if values else None
    out["clicks_total"] = sum(r.get("clicks", 0) for r in with_clicks)
    out["setbacks"] = sum(r.get("setbacks", 0) for r in with_clicks)
    scratch = sum(r["scratch_effort"] for r in with_clicks)
    left = sum(r["effort_after_clicks"] for r in with_clicks)
    out["effort_ratio_after_clicks"] = ratio(left, scratch)
    times = [r["click_s_median"] for r in with_clicks if r.get("click_s_median") is not None]
    out["click_s_median"] = round(float(np.median(times)), 3) if times else None
    return out
