"""Answer checking: ``is_correct(response, answers, grader)``, the one checker that the
evaluation and the built-in task's data labelling both use.

Every grader reads the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) of the
response; when that last box is never closed (a response cut off by the token limit) the
response has no answer. The graders differ in where they look and how they compare:

* ``"rllm"`` (the paper's evaluation scripts, rllm's math reward): when the response has a
  ``</think>``, only the text after the last one is read (a box inside the thinking does not
  count); the answer is correct if it matches any of the reference answers, either as equal
  strings after the mathd normalization or as expressions sympy finds equal
  (``redi.grading.rllm_grader``).
* ``"math-verify"``: the last box anywhere in the response, checked against each reference
  with the ``math-verify`` package.
* ``"exact"`` (the built-in task): the text after ``</think>`` as for rllm; the answer and a
  reference are equal as whole numbers (``"0632"`` and ``"$632$"`` read as 632, ``"1,234"``
  as 1234), or, when either is not a whole number, as strings with the spaces stripped.
"""

from __future__ import annotations

import re

GRADERS = ("rllm", "math-verify", "exact")
THINK_END = "</think>"
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def final_section(response: str) -> str:
    """The part of a response that holds its answer: after the last ``</think>``, if any."""
    head, sep, tail = response.rpartition(THINK_END)
    return tail if sep else response


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces kept, outer spaces stripped), or
    None when there is no box or the last one is never closed."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i].strip()
    return None


def whole_number(text: str) -> str | None:
    """A whole number in canonical form ("0632", "$1,234$ " -> "632", "1234"), else None."""
    cleaned = re.sub(r"[\s$,]|\\[,!; ]", "", text).rstrip(".")
    if not re.fullmatch(r"[+-]?\d+", cleaned):
        return None
    return str(int(cleaned))


def math_equal(gold: str, answer: str | None) -> bool:
    """Whether ``answer`` is mathematically equal to ``gold`` per math-verify (LaTeX or
    plain expressions, e.g. ``\\frac{1}{2}`` = ``0.5``). No answer is wrong."""
    if answer is None or not answer.strip():
        return False
    from math_verify import parse, verify

    def parsed(text):
        return parse(f"${text}$", parsing_timeout=5)

    try:
        return bool(verify(parsed(gold), parsed(answer), timeout_seconds=5))
    except Exception:  # math-verify raises on malformed LaTeX: the answer is not right
        return False


def _exact_equal(gold: str, answer: str) -> bool:
    numbers = whole_number(gold), whole_number(answer)
    if None not in numbers:
        return numbers[0] == numbers[1]
    return re.sub(r"\s", "", gold) == re.sub(r"\s", "", answer)


def response_answer(response: str, grader: str = "rllm") -> str | None:
    """The answer a grader reads from a response (see the module docstring)."""
    if grader not in GRADERS:
        raise ValueError(f"grader must be one of {GRADERS}, got {grader!r}")
    return extract_boxed(response if grader == "math-verify" else final_section(response))


def answer_is_correct(answer: str | None, answers: str | list[str],
                      grader: str = "rllm") -> bool:
    """Whether an extracted answer matches any of the references under ``grader``."""
    if grader not in GRADERS:
        raise ValueError(f"grader must be one of {GRADERS}, got {grader!r}")
    references = [answers] if isinstance(answers, str) else list(answers)
    if answer is None or not answer.strip() or not references:
        return False
    if grader == "math-verify":
        return any(math_equal(gold, answer) for gold in references)
    if grader == "exact":
        return any(_exact_equal(gold, answer) for gold in references)
    from .rllm_grader import mathd_equal, sympy_equal

    return any(mathd_equal(gold, answer) or sympy_equal(gold, answer) for gold in references)


def is_correct(response: str, answers: str | list[str], grader: str = "rllm") -> bool:
    """Whether ``response`` answers correctly: its last boxed answer (see the module
    docstring for where each grader looks) matches any of ``answers``."""
    return answer_is_correct(response_answer(response, grader), answers, grader)


def grade(answers: str | list[str], response: str,
          grader: str = "rllm") -> tuple[str | None, bool]:
    """(extracted answer, verdict) for one response."""
    answer = response_answer(response, grader)
    return answer, answer_is_correct(answer, answers, grader)
