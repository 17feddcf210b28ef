"""``redi prepare``: build sft.jsonl, pairs.jsonl and stats.json from raw rows, or
generate the built-in task and prepare it.

    redi prepare --input PATH --output-dir DIR [--tokenizer DIR] [--skip-invalid] [...]
    redi prepare --builtin --output-dir DIR [--task teacher|slips] [--num-problems N]
        [--num-test M] [--task-seed S]

Bad input prints one line naming the file, row and field, and exits with status 2; so do an
output directory that is a file or that another prepare is writing, and a full disk.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from redi.cli_options import add_option, add_output_dir
from redi.data import builtin_task, openr1
from redi.data.errors import DataError
from redi.data.formatting import TEMPLATES
from redi.data.validation import FORMATS


def _limit(text: str) -> int | None:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0 (0: no limit)")
    return value or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redi prepare",
        description="OpenR1-Math-Raw or TRL-format rows to sft.jsonl, pairs.jsonl and "
                    "stats.json (the REDI paper's rules); --builtin generates the built-in "
                    "addition task and prepares it.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="a JSONL/JSON/Parquet/Arrow file, a saved dataset "
                                        "directory, or a directory of such files")
    source.add_argument("--builtin", action="store_true",
                        help="generate the built-in task into --output-dir (raw.jsonl, test.jsonl, "
                             "test_pairs.jsonl) and prepare it")
    add_output_dir(parser, "output directory")
    parser.add_argument("--tokenizer", help="local Hugging Face tokenizer directory for the "
                                            "token counts (default: the built-in tokenizer)")
    parser.add_argument("--template", choices=TEMPLATES, default="auto",
                        help="chat template: the tokenizer's own, else a default (auto)")
    parser.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                        help="input format (auto: from the first row)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="drop bad rows and count them in stats.json instead of failing")
    parser.add_argument("--seed", type=int, default=openr1.SHUFFLE_SEED,
                        help="shuffle seed of the kept problems (default 42)")
    parser.add_argument("--drop-source", action="append", metavar="NAME",
                        help="a source to drop (repeatable; default: cn_k12)")
    add_option(parser, "--max-prompt-length", renamed_from="--max-prompt-tokens", type=_limit,
               default=openr1.MAX_PROMPT_TOKENS,
               help="drop pairs with a longer prompt, in tokens (0: no limit; default 800)")
    add_option(parser, "--max-response-length", renamed_from="--max-response-tokens",
               type=_limit, default=openr1.MAX_RESPONSE_TOKENS,
               help="drop pairs with a longer response, in tokens (0: no limit; "
                    "default 19000)")
    parser.add_argument("--keep-identical-pairs", action="store_true",
                        help="keep pairs whose chosen and rejected completions are the same "
                             "(dropped by default, counted in stats.json either way)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    task = parser.add_argument_group("built-in task (with --builtin)")
    task.add_argument("--task", choices=builtin_task.TASKS, default=builtin_task.DEFAULT_TASK,
                      help="teacher: the teacher model's verified samples (shipped); slips: "
                           "correct traces with injected slips")
    task.add_argument("--num-problems", type=int, default=builtin_task.DEFAULT_PROBLEMS)
    task.add_argument("--num-test", type=int, default=builtin_task.DEFAULT_TEST)
    task.add_argument("--task-seed", type=int, default=0)
    task.add_argument("--generations", type=int, default=4, help="teacher traces per problem")
    task.add_argument("--max-digits", type=int, default=3)
    task.add_argument("--max-operands", type=int, default=3)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from redi.data.formatting import Formatter
    from redi.data.prepare import PrepareOptions, prepare, prepare_builtin_task
    from redi.data.tokenizer import load_tokenizer
    from redi.files import OutputError

    try:
        formatter = Formatter(load_tokenizer(args.tokenizer), template=args.template)
        options = PrepareOptions(
            input_format=args.format, skip_invalid=args.skip_invalid, shuffle_seed=args.seed,
            dropped_sources=tuple(args.drop_source or openr1.DROPPED_SOURCES),
            max_prompt_tokens=args.max_prompt_length,
            max_response_tokens=args.max_response_length, progress=not args.no_progress,
            drop_identical_pairs=not args.keep_identical_pairs)
        if args.builtin:
            stats = prepare_builtin_task(
                args.output_dir, formatter, args.num_problems, args.num_test, args.task_seed,
                options, task=args.task, generations=args.generations, max_digits=args.max_digits,
                max_operands=args.max_operands)
        else:
            stats = prepare(args.input, args.output_dir, formatter, options)
    except (DataError, OutputError, ValueError) as error:
        print(f"redi prepare: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    written = ", ".join(f"{out / name}.jsonl ({stats[name]['written']} rows)"
                        for name in ("sft", "pairs") if name in stats)
    print(f"read {stats['rows']['read']} rows ({stats['rows']['invalid']} invalid, "
          f"{stats['rows']['filtered']} filtered); wrote {written} and {out / 'stats.json'}")
    if args.builtin:
        print(f"wrote the built-in task's raw.jsonl ({args.num_problems} problems), test.jsonl "
              f"and test_pairs.jsonl ({args.num_test} held-out problems) in {out}")
    if stats.get("skipped_files"):
        print(f"redi prepare: skipped files of other types: {', '.join(stats['skipped_files'])}",
              file=sys.stderr)
    if stats["invalid"]:
        print(f"redi prepare: skipped invalid rows: {stats['invalid']}", file=sys.stderr)
    return 0
