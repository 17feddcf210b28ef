"""The paper's OpenR1-Math-Raw rules (REDI, arXiv 2505.24850), as pure functions.

* drop rows whose ``source`` is ``cn_k12`` (configurable list);
* keep rows whose ``problem_is_valid`` is "yes", case-insensitive (surrounding spaces
  ignored; null is not "yes");
* a trace is correct iff ``llama_verification[i] and math_verify_reparsed_answer[i]``
  (a null verdict is not a True one);
* shuffle the kept problems with seed 42 (``numpy.random.default_rng(seed).permutation``,
  the permutation ``datasets.Dataset.shuffle(seed=seed)`` applies);
* SFT row: the first correct trace of a problem; pair: its first correct trace (chosen) and
  first incorrect trace (rejected), for problems that have both;
* pairs whose prompt exceeds 800 tokens or either response 19,000 tokens are dropped (not
  replaced by later traces). Token counts come from ``formatting.Encoded``.
"""

from __future__ import annotations

import numpy as np

from redi.data.validation import OpenR1Row

DROPPED_SOURCES = ("cn_k12",)
SHUFFLE_SEED = 42
MAX_PROMPT_TOKENS = 800
MAX_RESPONSE_TOKENS = 19_000


def filter_reason(record: dict, dropped_sources=DROPPED_SOURCES) -> str | None:
    """Why a raw row is filtered out (the first rule it fails), or None to keep it.

    Applied before the row is validated, so a malformed row of a dropped source or of an
    invalid problem is counted under its filter and never stops a run. A ``source`` or
    ``problem_is_valid`` that is missing or of the wrong type is left to validation."""
    source = record.get("source")
    if isinstance(source, str) and source in dropped_sources:
        return "dropped_source"
    if "problem_is_valid" not in record:
        return None
    valid = record["problem_is_valid"]
    if (valid is None or isinstance(valid, str)) and (valid or "").strip().lower() != "yes":
        return "problem_not_valid"
    return None


def correct_traces(row: OpenR1Row) -> list[bool]:
    """Per generation: llama_verification AND math_verify_reparsed_answer."""
    return [bool(a) and bool(b)
            for a, b in zip(row.llama_verification, row.math_verify_reparsed_answer,
                                strict=True)]


def first_traces(row: OpenR1Row) -> tuple[int | None, int | None]:
    """Indices of the first correct and the first incorrect generation (None: none)."""
    flags = correct_traces(row)
    return (flags.index(True) if True in flags else None,
            flags.index(False) if False in flags else None)


def pair_length_reason(prompt_tokens: int, chosen_tokens: int, rejected_tokens: int,
                       max_prompt_tokens: int | None = MAX_PROMPT_TOKENS,
                       max_response_tokens: int | None = MAX_RESPONSE_TOKENS) -> str | None:
    """Why a pair is too long ("prompt_too_long" first), or None (a None limit: no limit)."""
    if max_prompt_tokens is not None and prompt_tokens > max_prompt_tokens:
        return "prompt_too_long"
    if max_response_tokens is not None and max(chosen_tokens, rejected_tokens) > \
            max_response_tokens:
        return "response_too_long"
    return None


def shuffled_order(count: int, seed: int = SHUFFLE_SEED) -> np.ndarray:
    """The order the kept problems are written in."""
    return np.random.default_rng(seed).permutation(count)
