"""Scores over k samples per problem: pass@1 with its standard error, and unbiased pass@k.

* pass@1 (as in the paper): for each sample index j, the benchmark score S_j is the fraction
  of problems whose j-th sample is correct; pass@1 = mean_j S_j, and its standard error is
  s / sqrt(k), s the sample standard deviation of the S_j.
* pass@k (Chen et al., 2021): for a problem with n samples of which c are correct,
  1 - C(n - c, k) / C(n, k), the probability that k samples drawn without replacement
  contain a correct one; averaged over problems.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``n`` samples, ``c`` of them correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k / i): stable for large n
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k averaged over problems; ``correct[p]`` lists problem p's sample verdicts."""
    return sum(pass_at_k(len(v), sum(v), k) for v in correct) / len(correct)


def pass1_with_stderr(correct: Sequence[Sequence[bool]]) -> tuple[float, float]:
    """(pass@1, standard error) over k samples per problem (every problem has k)."""
    k = len(correct[0])
    if any(len(v) != k for v in correct):
        raise ValueError("every problem needs the same number of samples")
    scores = [sum(v[j] for v in correct) / len(correct) for j in range(k)]
    mean = sum(scores) / k
    if k == 1:
        return mean, 0.0
    variance = sum((s - mean) ** 2 for s in scores) / (k - 1)
    return mean, math.sqrt(variance / k)
