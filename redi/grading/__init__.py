"""Answer grading, the leaf both the built-in task's data labelling (``redi.data``) and the
evaluation (``redi.eval``) use, so neither imports the other.

* ``answers``: ``is_correct`` (the one answer checker: graders rllm, math-verify, exact),
  ``extract_boxed``, ``math_equal`` (math-verify), ``grade``;
* ``rllm_grader``: the mathd normalization and sympy equality of rllm's math reward.
"""

from .answers import GRADERS, extract_boxed, grade, is_correct, math_equal

__all__ = ["GRADERS", "extract_boxed", "grade", "is_correct", "math_equal"]
