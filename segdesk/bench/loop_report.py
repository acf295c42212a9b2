"""The loop benchmark's summary and plot, from its per-image records (segdesk.bench.loop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LAST = 10  # proposals averaged for the "last ten" Dice


def ratio(effort: float, scratch: float) -> float | None:
    return round(effort / scratch, 4) if scratch > 0 else None


def _sum(records: list[dict], key: str, fallback: str | None = None) -> float:
    return float(sum(r.get(key, r[fallback]) if fallback else r[key] for r in records))


def _mean(records: list[dict], key: str, fallback: str | None = None) -> float | None:
    if not records:
        return None
    return round(float(np.mean([r.get(key, r[fallback]) if fallback else r[key] for r in records])), 4)


def effort_ratios(records: list[dict], prefix: str = "") -> dict:
    """``{prefix}effort_ratio`` of the shown proposals, and ``_no_gate``, ``_raw`` and
    ``_last10`` beside it; ``prefix`` "region_" for the region measure."""
    effort, scratch = f"{prefix}effort", f"{prefix}scratch_effort"
    s = _sum(records, scratch)
    last = records[-LAST:]
    return {
        f"{prefix}effort_ratio": ratio(_sum(records, effort), s),
        f"{prefix}effort_ratio_no_gate": ratio(_sum(records, f"{effort}_no_gate", effort), s),
        f"{prefix}effort_ratio_raw": ratio(_sum(records, f"{effort}_raw", effort), s),
        f"{prefix}effort_ratio_last10": ratio(_sum(last, effort), _sum(last, scratch)),
        f"{prefix}effort_total": round(_sum(records, effort), 1),
        f"{prefix}scratch_effort_total": round(s, 1),
    }


def summarise(records: list[dict]) -> dict:
    """Effort ratios (both measures), last-ten Dice and friends from per-image records.

    ``dice_last10`` is of what the user was shown: a withheld proposal (and the first image's,
    before any model) is an empty one. ``dice_last10_model`` is of the model's own post-processed
    proposals, never withheld; ``dice_last10_raw`` of them before post-processing.
    ``first_proposal_at`` is the first image (1-based) a model proposed for, ``first_shown`` the
    first whose proposal the user saw (not withheld); None when never."""
    last = records[-LAST:]
    proposed = [r for r in records if r["checkpoint"] is not None]
    shown = [r for r in proposed if not r.get("withheld")]
    return {
        **effort_ratios(records),
        **effort_ratios(records, "region_"),
        "withheld": sum(1 for r in records if r.get("withheld")),
        "dice_last10": _mean(last, "dice"),
        "dice_last10_model": _mean(last, "dice_no_gate", "dice"),
        "dice_last10_raw": _mean(last, "dice_raw", "dice"),
        "dice_mean": _mean(records, "dice"),
        "first_proposal_at": proposed[0]["index"] if proposed else None,
        "first_shown": shown[0]["index"] if shown else None,
        "train_s_total": round(sum(r["train_s"] for r in records), 1),
        "train_steps_total": int(sum(r["train_steps"] for r in records)),
        "proposal_s_median": round(float(np.median([r["proposal_s"] for r in proposed])), 3) if proposed else None,
    }


def plot(result: dict, path: Path) -> Path:
    """Dice and effort ratio image by image, as a PNG at ``path``."""
    from segdesk.bench import plot as charts

    rows = result["per_image"]
    n = len(rows)
    per_image, cumulative = _ratio_series(rows, "effort", "scratch_effort")
    region_ratio, region_cumulative = _ratio_series(rows, "region_effort", "region_scratch_effort")
    name = Path(result["data"]).name
    budget = result["budget"]
    budget_text = f"{budget['seconds']:g} s" if "seconds" in budget else f"{budget['steps']} steps"
    top = max([1.5] + [v for v in per_image + region_ratio if v is not None])
    panels = [
        charts.Panel(f"{name}: Dice of each proposal (last ten mean: shown {result['dice_last10']}, "
                     f"model's own {result.get('dice_last10_model')})",
                     [charts.Series("shown (withheld = empty)", [r["dice"] for r in rows]),
                      charts.Series("model's proposal", [r.get("dice_no_gate", r["dice"]) for r in rows])],
                     y_range=(0.0, 1.0)),
        charts.Panel(f"correction effort / scratch effort (run ratio {result['effort_ratio']}, region "
                     f"{result.get('region_effort_ratio')}), {budget_text} training per image, "
                     f"init {result['init']}",
                     [charts.Series("E/S per image", per_image), charts.Series("cumulative", cumulative),
                      charts.Series("region E/S per image", region_ratio),
                      charts.Series("region cumulative", region_cumulative)],
                     y_range=(0.0, min(top, 4.0)), x_label=f"image (1..{n}, in labelling order)",
                     hlines=[(1.0, "= drawing from scratch")]),
    ]
    return charts.save(panels, path)


def _ratio_series(rows: list[dict], effort: str, scratch: str) -> tuple[list, list]:
    """Per-image ratio and the running ratio of sums (None where nothing is to draw yet)."""
    per_image, cumulative, e_sum, s_sum = [], [], 0.0, 0.0
    for r in rows:
        e, s = r[effort], r[scratch]
        per_image.append(e / s if s > 0 else None)
        e_sum, s_sum = e_sum + e, s_sum + s
        cumulative.append(e_sum / s_sum if s_sum > 0 else None)
    return per_image, cumulative
