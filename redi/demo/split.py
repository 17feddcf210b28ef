"""``redi demo --split-problems``: Stage 1 and Stage 2 on disjoint training problems.

In the main protocol both stages train on the same problems (as in the paper: the pairs are
problems of the SFT set), and the tiny Stage-1 model memorizes its traces, so Stage 2 sees
chosen traces it already predicts almost perfectly. This variant splits the training
problems in two halves by a hash of the problem text (a problem drawn twice lands in one
half): Stage 1 trains on the correct traces of one half, Stage 2 on the pairs of the other,
so Stage 2's chosen traces are new to the model. Validation and test problems are the
main protocol's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

STAGE1_DIR, STAGE2_DIR = "stage1", "stage2"


def problem_half(problem: str) -> int:
    """0 (Stage 1) or 1 (Stage 2): the parity of the problem text's SHA-256."""
    return hashlib.sha256(problem.encode()).digest()[-1] % 2


def split_problems(data: Path) -> tuple[Path, Path]:
    """The Stage-1 and Stage-2 data directories, prepared (once) from ``data/raw.jsonl``'s
    rows split by ``problem_half``, with the same rules as the main protocol's data."""
    from redi.data.formatting import Formatter
    from redi.data.prepare import PrepareOptions, prepare
    from redi.data.tokenizer import load_tokenizer

    dirs = (data / STAGE1_DIR, data / STAGE2_DIR)
    if all((d / "stats.json").is_file() for d in dirs):
        return dirs
    halves = ([], [])
    with (data / "raw.jsonl").open() as f:
        for line in f:
            halves[problem_half(json.loads(line)["problem"])].append(line)
    formatter = Formatter(load_tokenizer())
    # as prepare_builtin_task: a problem drawn twice keeps both rows (in the same half)
    options = PrepareOptions(progress=False, drop_duplicate_problems=False)
    for directory, lines in zip(dirs, halves, strict=True):
        directory.mkdir(parents=True, exist_ok=True)
        raw = directory.with_name(directory.name + "-raw.jsonl")
        raw.write_text("".join(lines))
        prepare(raw, directory, formatter, options)
    return dirs


def split_summary(stage1_data: Path, stage2_data: Path) -> dict:
    """Rows each stage trains on (from the two ``stats.json``)."""
    first = json.loads((stage1_data / "stats.json").read_text())
    second = json.loads((stage2_data / "stats.json").read_text())
    return {"stage1_sft_rows": first["sft"]["written"],
            "stage2_pairs": second["pairs"]["written"]}
