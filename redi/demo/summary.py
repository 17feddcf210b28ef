"""The demo's figures gathered into the results' entries: a method's test row, the paired
differences, a sweep cell over seeds, the usable learning-rate window.
"""

from __future__ import annotations

import statistics

from redi.demo import stats
from redi.demo.design import CONTROLS, SELECTION_METRIC, USABLE_WINDOW, recipe_value
from redi.demo.mechanism import STYLE_NAMES

CELL_SERIES = (SELECTION_METRIC, "val_greedy", "terse_share", "chosen_logp_per_token",
               "rejected_logp_per_token")


def _by_style(style_metrics: list[dict]) -> dict[str, list]:
    return {s: [m["accuracy_by_style"][s] for m in style_metrics] for s in STYLE_NAMES}


def method_entry(method: str, lr: float | None, tested: list[tuple[list[float], dict]],
                 seeds: list[int]) -> dict:
    """A method's test row: pass@1 per seed (with its SE over problems), mean and spread
    over seeds, the terse share and accuracy by style of its test samples per seed."""
    alpha = recipe_value(method, "alpha") if recipe_value(method, "loss") == "redi" else None
    per_seed = [stats.mean_se(scores) for scores, _ in tested]
    mean, spread = stats.mean_spread([p for p, _ in per_seed])
    return {"lr": lr, "alpha": alpha, "seeds": seeds, "pass1": [p for p, _ in per_seed],
            "pass1_se": [se for _, se in per_seed], "mean": mean, "spread": spread,
            "terse_share": [styles["terse_share"] for _, styles in tested],
            "accuracy_by_style": _by_style([styles for _, styles in tested])}


def paired_entries(tested: dict[str, list[tuple[list[float], dict]]],
                   seeds_of: dict[str, list[int]]) -> dict:
    """REDI minus each control (``CONTROLS``), each other method minus REDI, on the seeds
    both have (a method of fewer seeds has the first ones)."""
    if "redi" not in tested:
        return {}
    entries = {}
    for method in tested:
        if method == "redi":
            continue
        a, b = ("redi", method) if method in CONTROLS else (method, "redi")
        count = len(seeds_of[method])
        entries[f"{a}_minus_{b}"] = stats.paired_difference(
            [scores for scores, _ in tested[a][:count]],
            [scores for scores, _ in tested[b][:count]]) | {"seeds": seeds_of[method]}
    return entries


def sweep_entry(cells: list[dict]) -> dict:
    """One sweep cell over seeds: each validation figure as a list (one value per seed)."""
    return {key: [c[key] for c in cells] for key in CELL_SERIES} | {
        "accuracy_by_style": _by_style(cells)}


def usable_window(sweep: dict[str, dict[str, dict]]) -> dict[str, list[str]]:
    """Per method, the rates whose mean validation sampled pass@1 is within
    ``USABLE_WINDOW`` of the method's best rate's."""
    window = {}
    for method, points in sweep.items():
        means = {lr: statistics.fmean(cell[SELECTION_METRIC]) for lr, cell in points.items()}
        best = max(means.values())
        window[method] = [lr for lr, m in means.items() if round(best - m, 9) <= USABLE_WINDOW]
    return window
