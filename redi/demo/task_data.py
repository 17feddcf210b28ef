"""The demo's data piece (``OUT/data``): the built-in task prepared once per task and size,
the teacher's statistics, and the data sets derived from it (``chosen_traces``; the
``--split-problems`` halves are ``redi.demo.split``'s). A derived set is a function of the
data piece alone, so the data piece's record guards it too.
"""

from __future__ import annotations

import json
from pathlib import Path

from redi.data import builtin_task
from redi.demo.design import DemoSize
from redi.demo.pieces import Piece, claim

CHOSEN_DIR = "chosen_traces"
# a pair's fields that an SFT row of its chosen trace keeps, under the SFT row's names
PROVENANCE = {"source": "source", "uuid": "uuid", "row": "row", "answer": "answer",
              "chosen_generation": "generation"}


def prepare_data(out: Path, task: str, size: DemoSize) -> Piece:
    """The data piece of ``task`` at ``size`` (prepared unless a previous run finished it)."""
    from redi.data.formatting import Formatter
    from redi.data.prepare import PrepareOptions, prepare_builtin_task
    from redi.data.tokenizer import load_tokenizer
    from redi.files import sha256_of

    rows = builtin_task.teacher_rows_path(task)
    teacher = task in builtin_task.TEACHER_TASKS
    if teacher and not rows.is_file():
        raise ValueError(f"task {task!r}: the teacher rows {rows} do not exist; make them with "
                         f"`python -m redi.demo.teacher --task {task}`")
    piece = claim(out / "data", {
        "piece": "data", "task": task, "problems": size.problems,
        "validation": size.validation, "test": size.test,
        "teacher_rows_sha256": sha256_of(rows) if teacher else None})
    if not (piece.folder / "stats.json").is_file():  # written last by prepare
        print(f"[demo] task {task!r}: {size.problems} training problems in {piece.folder}",
              flush=True)
        prepare_builtin_task(piece.folder, Formatter(load_tokenizer()), size.problems,
                             size.test, task=task, num_validation=size.validation,
                             options=PrepareOptions(progress=False))
    return piece


def chosen_traces(pairs_dir: Path) -> Path:
    """``pairs_dir/chosen_traces``: an SFT set (``sft.jsonl``) of exactly the chosen traces
    of ``pairs_dir/pairs.jsonl``, in the pairs' order, one row per pair (with the pair's
    provenance): what ``sft_more`` trains on with the Stage-1 loss, so that its steps are
    REDI's (same rows, batch and epochs)."""
    from redi.files import atomic_write_text

    directory = pairs_dir / CHOSEN_DIR
    if not (directory / "sft.jsonl").is_file():
        rows = []
        for line in (pairs_dir / "pairs.jsonl").open():
            pair = json.loads(line)
            provenance = {name: pair[key] for key, name in PROVENANCE.items() if key in pair}
            rows.append(json.dumps({"messages": pair["prompt"] + pair["chosen"], **provenance})
                        + "\n")
        directory.mkdir(exist_ok=True)
        atomic_write_text(directory / "sft.jsonl", "".join(rows))
    return directory


def teacher_summary(data: Path) -> dict:
    """The teacher rows' error rates (``redi.demo.teacher.error_rates``: by style where the
    rows carry styles) and the SFT rows and pairs prepared from them."""
    from redi.demo.teacher import error_rates

    rows = [json.loads(line) for line in (data / "raw.jsonl").open()]
    written = json.loads((data / "stats.json").read_text())
    return error_rates(rows) | {"sft_rows": written["sft"]["written"],
                                "pairs": written["pairs"]["written"]}
