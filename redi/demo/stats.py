"""The demo's statistics: pass@1 with its standard error, paired differences over seeds.

A model's per-problem score is its share of correct samples, c_i (k samples of problem i).

* pass@1 = mean_i c_i, with the standard error over problems sd_i(c_i) / sqrt(n): how much
  the figure would move on another draw of n problems and samples.
* A paired difference A - B within a seed uses d_i = c_i(A) - c_i(B) on the same problems:
  diff = mean_i d_i, se = sd_i(d_i) / sqrt(n).
* Over S seeds (the same test problems, each seed its own Stage 1 and Stage 2): diff is the
  mean of the per-seed diffs, and its standard error adds the two sources of noise,
  se^2 = se_p^2 + se_s^2 with se_p^2 = sd_i(mean_s d_si)^2 / n (problems) and
  se_s^2 = sd_s(diff_s)^2 / S (training runs; 0 with one seed).
* The critical value is Student's t (two-sided 95 %) with the Welch-Satterthwaite degrees of
  freedom of that sum, each part with its own: n - 1 for the problems, S - 1 for the seeds,
  dof = (se_p^2 + se_s^2)^2 / (se_p^4 / (n - 1) + se_s^4 / (S - 1)) (a part that is 0 drops
  out: with one seed dof = n - 1; with 3 seeds whose diffs vary much more than the problems
  explain, dof falls towards 2 and t_crit towards 4.3). A difference is called only where
  |diff| > t_crit se. Why not 2 se: with 3 seeds the between-seed part of se is estimated
  from 2 degrees of freedom, and treating it as known calls differences far too often.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

CONFIDENCE = 0.95  # two-sided
DOF_RULE = ("Student's t, two-sided 95 %, with the Welch-Satterthwaite degrees of freedom of "
            "se^2 = se_problems^2 + se_seeds^2 (n - 1 for the problems, S - 1 for the seeds; "
            "one seed: n - 1); called where |diff| > t_crit se")


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


def t_critical(dof: float) -> float:
    """The two-sided ``CONFIDENCE`` critical value of Student's t with ``dof`` degrees."""
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, dof))


def welch_dof(parts: list[tuple[float, int]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variances ``(var, dof)``; parts of
    zero variance drop out; all zero: the largest part's dof (nothing to estimate)."""
    total = sum(var for var, _ in parts)
    if total == 0:
        return float(max(dof for _, dof in parts))
    return total ** 2 / sum(var ** 2 / dof for var, dof in parts if var > 0)


def paired_difference(a: list[list[float]], b: list[list[float]]) -> dict:
    """A - B from per-seed per-problem scores (``a[s][i]``), as in the module docstring."""
    diffs = [[x - y for x, y in zip(sa, sb, strict=True)] for sa, sb in zip(a, b, strict=True)]
    per_seed = [statistics.fmean(d) for d in diffs]
    per_problem = [statistics.fmean(col) for col in zip(*diffs, strict=True)]
    se_problems, se_seeds = _se(per_problem), _se(per_seed)
    diff = statistics.fmean(per_seed)
    se = math.hypot(se_problems, se_seeds)
    dof = welch_dof([(se_problems ** 2, len(per_problem) - 1)]
                    + ([(se_seeds ** 2, len(per_seed) - 1)] if len(per_seed) > 1 else []))
    t_crit = t_critical(dof)
    return {"diff": diff, "se": se, "dof": dof, "t_crit": t_crit,
            "called": abs(diff) > t_crit * se, "per_seed": per_seed,
            "per_seed_se": [_se(d) for d in diffs], "se_problems": se_problems,
            "se_seeds": se_seeds}


def paired_verdicts(before: list[float], after: list[float]) -> dict:
    """The gain after - before of two models scored on the same problems, with the paired
    standard error sd_i(after_i - before_i) / sqrt(n) and its t critical value (n - 1
    degrees of freedom)."""
    result = paired_difference([after], [before])
    return {"gain": result["diff"], "gain_se": result["se"], "t_crit": result["t_crit"]}


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 with one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
