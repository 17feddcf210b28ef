"""Row validation for the three accepted input formats.

Every check raises a ``DataError`` naming the file, the 1-based row and the field, with one
of these reasons (the keys counted in stats.json under --skip-invalid):
``missing_field``, ``wrong_type``, ``wrong_role``, ``length_mismatch``, ``empty_problem``,
``empty_trace`` (and ``undecodable_line`` from the reader).

Formats:

* ``openr1``: OpenR1-Math-Raw rows (``problem``, ``generations``, ``correctness``,
  ``problem_is_valid``, ``source``; optional ``uuid``, ``answer``). A null verdict in a
  correctness list means "not verified" (the trace counts as incorrect) and is counted.
* ``messages``: TRL conversational SFT rows, ``messages`` = [{role, content}, ...] with at
  least one assistant message.
* ``preference``: TRL conversational preference rows, ``prompt`` (messages ending before
  the answer), ``chosen`` and ``rejected`` (messages ending with an assistant message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redi.data.errors import DataError
from redi.data.io import Row

FORMATS = ("openr1", "messages", "preference")
VERDICTS = ("llama_verification", "math_verify_reparsed_answer")
_TYPE_NAMES = {str: "a string", list: "a list", dict: "an object", bool: "a boolean"}


@dataclass(frozen=True)
class OpenR1Row:
    """The fields of an OpenR1-Math-Raw row that the builder uses."""

    problem: str
    generations: list[str]
    llama_verification: list[bool | None]
    math_verify_reparsed_answer: list[bool | None]
    problem_is_valid: str | None
    source: str
    uuid: str | None
    answer: str | None


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _error(row: Row, field: str | None, reason: str, detail: str) -> DataError:
    return DataError(row.file, row.number, field, reason, detail)


def _get(row: Row, container: dict, key: str, field: str, kind: type, nullable=False):
    """``container[key]`` checked to be of ``kind`` (or None when nullable)."""
    if key not in container:
        raise _error(row, field, "missing_field", "missing")
    value = container[key]
    if not (isinstance(value, kind) or (nullable and value is None)):
        raise _error(row, field, "wrong_type",
                     f"expected {_TYPE_NAMES[kind]}, got {_type_name(value)}")
    return value


def _record(row: Row) -> dict:
    if not isinstance(row.data, dict):
        raise _error(row, None, "wrong_type", f"expected an object, got {_type_name(row.data)}")
    return row.data


def detect_format(data: Any) -> str | None:
    """The format a record looks like (None: none of them)."""
    if not isinstance(data, dict):
        return None
    if "generations" in data or "problem" in data:
        return "openr1"
    if "messages" in data:
        return "messages"
    if {"prompt", "chosen", "rejected"} & data.keys():
        return "preference"
    return None


def openr1_row(row: Row) -> OpenR1Row:
    """Validate an OpenR1-Math-Raw row."""
    record = _record(row)
    problem = _get(row, record, "problem", "problem", str)
    if not problem.strip():
        raise _error(row, "problem", "empty_problem", "empty problem")
    generations = _get(row, record, "generations", "generations", list)
    for i, trace in enumerate(generations):
        if not isinstance(trace, str):
            raise _error(row, f"generations[{i}]", "wrong_type",
                         f"expected a string, got {_type_name(trace)}")
        if not trace.strip():
            raise _error(row, f"generations[{i}]", "empty_trace", "empty trace")
    correctness = _get(row, record, "correctness", "correctness", dict)
    verdicts = {}
    for key in VERDICTS:
        field = f"correctness.{key}"
        values = _get(row, correctness, key, field, list)
        if len(values) != len(generations):
            raise _error(row, field, "length_mismatch",
                         f"{len(values)} verdicts for {len(generations)} generations")
        for i, v in enumerate(values):
            if not (v is None or isinstance(v, bool)):
                raise _error(row, f"{field}[{i}]", "wrong_type",
                             f"expected a boolean, got {_type_name(v)}")
        verdicts[key] = values
    return OpenR1Row(
        problem=problem,
        generations=generations,
        problem_is_valid=_get(row, record, "problem_is_valid", "problem_is_valid", str,
                              nullable=True),
        source=_get(row, record, "source", "source", str),
        uuid=_get(row, record, "uuid", "uuid", str, nullable=True) if "uuid" in record else None,
        answer=_answer(row, record),
        **verdicts,
    )


def _answer(row: Row, record: dict) -> str | None:
    """The optional reference answer, as text (numbers are accepted and converted)."""
    value = record.get("answer")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _error(row, "answer", "wrong_type",
                 f"expected a string or a number, got {_type_name(value)}")


def _messages(row: Row, value: Any, field: str, last_role: str | None = None) -> list[dict]:
    """A non-empty list of {role, content} strings; empty user/assistant content rejected."""
    if not isinstance(value, list):
        raise _error(row, field, "wrong_type", f"expected a list, got {_type_name(value)}")
    if not value:
        raise _error(row, field, "missing_field", "no messages")
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise _error(row, where, "wrong_type",
                         f"expected an object, got {_type_name(message)}")
        role = _get(row, message, "role", f"{where}.role", str)
        content = _get(row, message, "content", f"{where}.content", str)
        if not content.strip() and role in ("user", "assistant"):
            reason = "empty_trace" if role == "assistant" else "empty_problem"
            raise _error(row, f"{where}.content", reason, f"empty {role} message")
    if last_role is not None and value[-1]["role"] != last_role:
        raise _error(row, f"{field}[{len(value) - 1}].role", "wrong_role",
                     f"the last message must be from the {last_role}, "
                     f"not the {value[-1]['role']}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def messages_row(row: Row) -> list[dict]:
    """Validate a TRL conversational SFT row; returns its messages."""
    record = _record(row)
    if "messages" not in record:
        raise _error(row, "messages", "missing_field", "missing")
    messages = _messages(row, record["messages"], "messages")
    if not any(m["role"] == "assistant" for m in messages):
        raise _error(row, "messages", "missing_field", "no assistant message")
    return messages


def preference_row(row: Row) -> tuple[list[dict], list[dict], list[dict]]:
    """Validate a TRL conversational preference row; returns (prompt, chosen, rejected)."""
    record = _record(row)
    parts = []
    for key in ("prompt", "chosen", "rejected"):
        if key not in record:
            raise _error(row, key, "missing_field", "missing")
        parts.append(_messages(row, record[key], key,
                               last_role=None if key == "prompt" else "assistant"))
    if parts[0][-1]["role"] == "assistant":
        raise _error(row, f"prompt[{len(parts[0]) - 1}].role", "wrong_role",
                     "the prompt must not end with an assistant message")
    return tuple(parts)


def check_some_preference(file: str, identical: int, pairs: int) -> None:
    """A pair set in which every pair has the same chosen and rejected completion teaches no
    preference (DPO's loss is a constant log 2): an error naming the file."""
    if pairs and identical == pairs:
        raise DataError(file, None, None, "identical_pairs",
                        f"all {pairs} pairs have the same chosen and rejected completion: "
                        "there is no preference to learn")
