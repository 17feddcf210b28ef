"""Evaluation: pass@k on math benchmarks with answer verification (``redi eval``).

* ``scoring``: ``pass_at_k`` (the unbiased estimator), ``mean_pass_at_k``,
  ``pass1_with_stderr``;
* ``redi.grading`` (re-exported here): ``is_correct`` (the one answer checker: graders
  rllm, math-verify, exact), ``extract_boxed``, ``math_equal`` (math-verify), ``grade``;
* ``benchmarks``: local MATH-500, AIME24, AMC23, Minerva, OlympiadBench and built-in files;
* ``generation``: Hugging Face ``generate`` or vLLM sampling;
* ``runner``: ``evaluate`` (resumable samples.jsonl + summary.json); ``cli``: ``redi eval``.
"""

from redi.grading.answers import GRADERS, extract_boxed, grade, is_correct, math_equal

from .scoring import mean_pass_at_k, pass1_with_stderr, pass_at_k

__all__ = ["GRADERS", "extract_boxed", "grade", "is_correct", "math_equal", "mean_pass_at_k",
           "pass1_with_stderr", "pass_at_k"]
