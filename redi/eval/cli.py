"""``redi eval``: pass@k of a model on a benchmark file.

    redi eval --model DIR --data FILE --output-dir OUT [--samples 16] [--temperature 0.6]
              [--top-p 0.95] [--max-new-tokens N] [--backend hf|vllm] [--benchmark NAME]

Rerunning with the same OUT skips finished samples. A bad benchmark file prints one line
naming the row and field and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

from redi.cli_options import add_output_dir

from .benchmarks import BENCHMARKS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="redi eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a Hugging Face model directory")
    p.add_argument("--data", required=True, help="a benchmark file (JSONL/JSON/Parquet)")
    add_output_dir(p, "output directory (resumable)")
    p.add_argument("--benchmark", choices=BENCHMARKS, default="auto",
                   help="schema of --data (auto: from the file name)")
    p.add_argument("--samples", type=int, default=16, help="samples per problem (k)")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=32768)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    p.add_argument("--prompt", choices=("openr1", "plain"), default="openr1",
                   help="openr1: the Open-R1 math prompt; plain: the problem as is")
    p.add_argument("--no-think", action="store_true", help="do not start with <think>")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per generate call")
    p.add_argument("--limit", type=int, help="only the first N problems")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("samples", "batch_size", "limit", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    from redi.data.errors import DataError

    from .generation import SamplingSettings
    from .runner import EvalOptions, evaluate, format_table

    options = EvalOptions(
        samples=args.samples, backend=args.backend, prompt_style=args.prompt,
        think=not args.no_think, batch_size=args.batch_size, limit=args.limit,
        sampling=SamplingSettings(args.temperature, args.top_p, args.max_new_tokens,
                                  args.seed))
    try:
        summary = evaluate(args.model, args.data, args.output_dir, args.benchmark, options,
                           progress=not args.no_progress)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"redi eval: {err}", file=sys.stderr)
        return 2
    print(format_table(summary))
    return 0
