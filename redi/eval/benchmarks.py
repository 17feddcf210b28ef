"""Benchmark files: local JSONL (or JSON/Parquet) copies in their usual schemas.

| benchmark       | problem field        | answer field               | id field          |
|-----------------|----------------------|----------------------------|-------------------|
| ``math500``     | problem              | answer                     | unique_id         |
| ``aime24``      | problem (question)   | answer                     | id                |
| ``amc23``       | question (problem)   | answer                     | id                |
| ``minerva``     | question (problem)   | answer                     | id (idx)          |
| ``olympiadbench``| question (problem)  | final_answer (answer); a list: every entry | id |
| ``builtin``     | problem              | answer                     | id                |

Fields in parentheses are accepted instead (HuggingFaceH4/MATH-500, HuggingFaceH4/aime_2024,
math-ai/amc23, math-ai/minervamath, Hothan/OlympiadBench use the first names). A row
without an id gets its 1-based row number. ``auto`` picks the benchmark from the file name
(e.g. ``math500.jsonl``, ``aime_2024.jsonl``), else reads the plain problem/answer fields.
An answer field holding a list gives several reference answers (a response matching any
of them is correct); ``Problem.answer`` is the first. A missing or empty problem or answer
is an error naming the file, row and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from redi.data.errors import DataError
from redi.data.io import read_rows


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    answers: tuple[str, ...] = ()  # every reference answer (``answer`` is the first)

    @property
    def references(self) -> list[str]:
        return list(self.answers or (self.answer,))


# benchmark -> (problem fields, answer fields, id fields), first match wins
SCHEMAS = {
    "math500": (("problem",), ("answer",), ("unique_id", "id")),
    "aime24": (("problem", "question"), ("answer",), ("id", "ID")),
    "amc23": (("question", "problem"), ("answer",), ("id",)),
    "minerva": (("question", "problem"), ("answer",), ("id", "idx")),
    "olympiadbench": (("question", "problem"), ("final_answer", "answer"), ("id",)),
    "builtin": (("problem",), ("answer",), ("id",)),
}
GENERIC = (("problem", "question"), ("answer", "final_answer"), ("id", "unique_id", "idx"))
_NAME_HINTS = {"math500": r"math[-_]?500", "aime24": r"aime", "amc23": r"amc",
               "minerva": r"minerva", "olympiadbench": r"olympiad"}
BENCHMARKS = ("auto", *SCHEMAS)


def detect_benchmark(path: str | Path) -> str | None:
    name = Path(path).name.lower()
    return next((b for b, hint in _NAME_HINTS.items() if re.search(hint, name)), None)


def _values(row, names: tuple[str, ...], required: bool) -> list[str] | None:
    """Every value of the first present field (a list field gives several)."""
    for name in names:
        if name in row.data and row.data[name] not in (None, "", []):
            value = row.data[name]
            return [str(v).strip() for v in (value if isinstance(value, list) else [value])]
    if required:
        raise DataError(row.file, row.number, names[0], "missing_field",
                        f"missing or empty (expected one of {list(names)})")
    return None


def _field(row, names: tuple[str, ...], required: bool) -> str | None:
    values = _values(row, names, required)
    return values[0] if values else None


def load_benchmark(path: str | Path, benchmark: str = "auto") -> list[Problem]:
    """Problems of a benchmark file (see the module docstring)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    if benchmark == "auto":
        benchmark = detect_benchmark(path)
    problem_fields, answer_fields, id_fields = SCHEMAS.get(benchmark, GENERIC)
    problems, seen = [], set()
    for row in read_rows(path):
        if isinstance(row, DataError):
            raise row
        if not isinstance(row.data, dict):
            raise DataError(row.file, row.number, None, "not_an_object", "expected an object")
        pid = _field(row, id_fields, required=False) or str(row.number)
        if pid in seen:
            raise DataError(row.file, row.number, id_fields[0], "duplicate_id",
                            f"id {pid!r} appears twice")
        seen.add(pid)
        answers = tuple(a.strip("$").strip() for a in _values(row, answer_fields, True))
        problems.append(Problem(pid, _field(row, problem_fields, True), answers[0], answers))
    if not problems:
        raise DataError(str(path), None, None, "empty_input", "no problems")
    return problems
