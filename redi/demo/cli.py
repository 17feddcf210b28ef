"""``redi demo``'s command line: the flags, their checks (one-line errors, status 2), and
``--full``'s copy of the results to ``docs/demo/``; the job itself is ``redi.demo.run``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from redi.cli_options import add_option
from redi.data import builtin_task
from redi.data.errors import DataError
from redi.demo import run
from redi.demo.design import BASIC, FULL, LR_GRID, METHODS, QUICK, output_dir
from redi.files import OutputError


def _grid(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}") from None
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"every learning rate must be > 0: {text!r}")
    return values


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="redi demo", description=run.__doc__.split("\n\n")[0])
    add_option(parser, "--output-dir", renamed_from="--output", default=None,
               help="the one output directory (default runs/demo; runs/demo-full with --full, "
                    "runs/demo-quick with --quick)")
    parser.add_argument("--task", default=builtin_task.DEFAULT_TASK,
                        help=f"built-in task: {', '.join(builtin_task.TASKS)}")
    parser.add_argument("--compare", action="store_true",
                        help="also symmetric REDI, DPO, SimPO and REDI with a floor from the "
                             "same Stage 1")
    parser.add_argument("--sweep", action="store_true",
                        help="choose each Stage-2 learning rate from --grid on validation")
    parser.add_argument("--grid", type=_grid, default=LR_GRID,
                        help="learning rates of the sweep (comma-separated, each > 0)")
    parser.add_argument("--seeds", type=_positive_int, default=None, help="number of seeds (>= 1)")
    parser.add_argument("--compare-seeds", type=_positive_int, default=None,
                        help="run the --compare methods on the first N seeds only")
    parser.add_argument("--split-problems", action="store_true",
                        help="Stage 1 on one half of the training problems, Stage 2 on the "
                             "other half's pairs (a variant; see redi.demo.split)")
    parser.add_argument("--stage1-epochs", type=_positive_float, default=None,
                        help=f"Stage-1 epochs (default {FULL.stage1_epochs:g})")
    parser.add_argument("--workers", type=_positive_int, default=1,
                        help="seeds trained and tested in this many processes at once "
                             "(the CPU cores are shared among them)")
    parser.add_argument("--full", action="store_true", help="the documented experiment: "
                        "--compare --sweep over 3 seeds; rewrites docs/demo/")
    parser.add_argument("--quick", action="store_true",
                        help="a scaled-down run (seconds, not minutes): checks the pipeline")
    args = parser.parse_args(argv)
    if args.task not in builtin_task.TASKS:
        parser.error(f"unknown --task {args.task!r}; choose one of "
                     f"{', '.join(builtin_task.TASKS)}")
    seeds = args.seeds or (3 if args.full else 1)
    output = Path(args.output_dir or output_dir(args.full, args.quick))
    methods = METHODS if args.compare or args.full else ("sft", *BASIC)
    size = QUICK if args.quick else FULL
    if args.stage1_epochs is not None:
        size = replace(size, stage1_epochs=args.stage1_epochs)
    command = "redi demo " + " ".join(argv)
    try:
        run.run_demo(output, list(range(seeds)), methods, size, args.task,
                     args.grid if args.sweep or args.full else None,
                     compare_seeds=args.compare_seeds, split=args.split_problems,
                     workers=args.workers, command=command.strip())
    except (DataError, OutputError, ValueError) as err:  # StalePiece is a ValueError
        print(f"redi demo: {err}", file=sys.stderr)
        return 2
    if args.full and not (args.quick or args.split_problems or args.stage1_epochs is not None):
        docs = Path("docs/demo")
        docs.mkdir(parents=True, exist_ok=True)
        for name in ("results.json", "results.md", "stage2_curves.png"):
            shutil.copyfile(output / name, docs / name)
        print(f"copied the results to {docs}/")
    return 0
