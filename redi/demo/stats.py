"""The demo's statistics: pass@1 with its standard error, paired differences over seeds.

A model's per-problem score is its share of correct samples, c_i (k samples of problem i).

* pass@1 = mean_i c_i, with the standard error over problems sd_i(c_i) / sqrt(n): how much
  the figure would move on another draw of n problems and samples.
* A paired difference A - B within a seed uses d_i = c_i(A) - c_i(B) on the same problems:
  diff = mean_i d_i, se = sd_i(d_i) / sqrt(n).
* Over S seeds (the same test problems, each seed its own Stage 1 and Stage 2): diff is the
  mean of the per-seed diffs, and its standard error adds the two sources of noise,
  se^2 = sd_i(mean_s d_si)^2 / n  (problems)  +  sd_s(diff_s)^2 / S  (training runs;
  0 with one seed). A difference is called only where |diff| > 2 se.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path


def per_problem_scores(samples_path: Path, ids: list[str], k: int) -> list[float]:
    """c_i for each problem id (in that order) from a ``redi eval`` samples file."""
    correct: dict[str, list[bool]] = {}
    for line in samples_path.open():
        record = json.loads(line)
        if record["sample"] < k:
            correct.setdefault(record["id"], []).append(bool(record["correct"]))
    missing = [i for i in ids if len(correct.get(i, ())) != k]
    if missing:
        raise ValueError(f"{samples_path}: {len(missing)} problems lack {k} samples "
                         f"(first: {missing[0]})")
    return [sum(correct[i]) / k for i in ids]


def _se(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def mean_se(scores: list[float]) -> tuple[float, float]:
    """pass@1 and its standard error over problems."""
    return statistics.fmean(scores), _se(scores)


def paired_difference(a: list[list[float]], b: list[list[float]]) -> dict:
    """A - B from per-seed per-problem scores (``a[s][i]``), as in the module docstring."""
    diffs = [[x - y for x, y in zip(sa, sb, strict=True)] for sa, sb in zip(a, b, strict=True)]
    per_seed = [statistics.fmean(d) for d in diffs]
    per_problem = [statistics.fmean(col) for col in zip(*diffs, strict=True)]
    se_problems, se_seeds = _se(per_problem), _se(per_seed)
    diff = statistics.fmean(per_seed)
    se = math.hypot(se_problems, se_seeds)
    return {"diff": diff, "se": se, "per_seed": per_seed,
            "per_seed_se": [_se(d) for d in diffs], "se_problems": se_problems,
            "se_seeds": se_seeds, "called": abs(diff) > 2 * se}


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 with one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
