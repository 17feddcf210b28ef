"""Answers: the content of the last ``\\boxed{}`` of a generation, checked against the gold
answer with the ``math-verify`` package (a whole-number match for the built-in task)."""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text: str) -> str | None:
    """Content of the last closed ``\\boxed{...}`` (nested braces kept; a final box cut off
    before its closing brace is skipped), or None if there is none."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip()
    return None


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


def grade(gold: str, generation: str, builtin: bool = False) -> tuple[str | None, bool]:
    """(extracted answer, verdict) for one generation: math-verify, or for the built-in
    task an exact whole-number match (``redi.data.builtin_task.normalize_answer``)."""
    answer = extract_boxed(generation)
    if not builtin:
        return answer, math_equal(gold, answer)
    from redi.data.builtin_task import normalize_answer

    value = None if answer is None else normalize_answer(answer)
    return answer, value is not None and value == normalize_answer(gold)
