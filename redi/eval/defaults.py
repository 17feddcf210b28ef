"""What ``redi eval`` uses when a flag is not given: grader, prompt, and new-token cap.

* grader: ``exact`` for the built-in task, else ``rllm`` (the paper's evaluation scripts;
  see ``redi.grading.answers``).
* prompt: the five math benchmarks (MATH-500, AIME24, AMC23, Minerva, OlympiadBench) get the
  paper's protocol, the Open-R1 math prompt with ``<think>\\n`` forced. Any other file gets
  the prompt the model was trained with: ``redi sft`` / ``redi train`` record it in the
  exported model directory (``training_prompt.json``: the prompt style, and whether the
  training traces start with ``<think>``); a model without that record gets the problem text
  as is (what ``redi prepare`` trains on) with ``<think>\\n``.
* max new tokens: at most the model's context (``max_position_embeddings`` of its
  config.json) minus the longest prompt; a larger request is lowered, with a message.
"""

from __future__ import annotations

import json
from pathlib import Path

from redi.model_dir import TRAINING_PROMPT_FILE, read_training_prompt

MATH_BENCHMARKS = ("math500", "aime24", "amc23", "minerva", "olympiadbench")
DEFAULT_MAX_NEW_TOKENS = 32768


def default_grader(benchmark: str) -> str:
    return "exact" if benchmark == "builtin" else "rllm"


def default_prompt(model_dir: str | Path, benchmark: str) -> tuple[str, bool, str]:
    """(prompt style, think, where it comes from) for a benchmark and a model."""
    if benchmark in MATH_BENCHMARKS:
        return "openr1", True, f"the paper's protocol for {benchmark}"
    recorded = read_training_prompt(model_dir)
    if recorded is not None:
        return (recorded["prompt_style"], recorded["think"],
                f"the training prompt recorded in {Path(model_dir) / TRAINING_PROMPT_FILE}")
    return "plain", True, "the problem text as is (no training prompt recorded)"


def model_context(model_dir: str | Path) -> int | None:
    """``max_position_embeddings`` of a model directory's config.json (None: not given)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else None


def cap_new_tokens(requested: int, context: int | None,
                   longest_prompt: int) -> tuple[int, str | None]:
    """(new tokens to allow, a message when ``requested`` had to be lowered)."""
    if context is None or requested + longest_prompt <= context:
        return requested, None
    room = context - longest_prompt
    if room < 1:
        raise ValueError(f"the longest prompt has {longest_prompt} tokens, the model's "
                         f"context only {context} (max_position_embeddings)")
    return room, (f"--max-new-tokens {requested} does not fit the model's context of {context} "
                  f"tokens with the longest prompt ({longest_prompt} tokens): using {room}")
