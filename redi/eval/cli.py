"""``redi eval``: pass@k of a model on a benchmark file.

    redi eval --model DIR --data FILE --output-dir OUT [--samples 16] [--temperature 0.6]
              [--top-p 0.95] [--max-new-tokens N] [--backend hf|vllm] [--benchmark NAME]
              [--grader rllm|math-verify|exact] [--prompt openr1|plain]

Defaults for the grader, the prompt and the new-token cap: ``redi.eval.defaults``.
Rerunning with the same OUT skips finished samples. A bad benchmark file prints one line
naming the row and field and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

from redi.cli_options import add_output_dir
from redi.grading.answers import GRADERS

from .benchmarks import BENCHMARKS
from .defaults import DEFAULT_MAX_NEW_TOKENS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="redi eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a Hugging Face model directory")
    p.add_argument("--data", required=True, help="a benchmark file (JSONL/JSON/Parquet)")
    add_output_dir(p, "output directory (resumable)")
    p.add_argument("--benchmark", choices=BENCHMARKS, default="auto",
                   help="schema of --data (auto: from the file name)")
    p.add_argument("--samples", type=int, default=16, help="samples per problem (k)")
    p.add_argument("--temperature", type=float, default=0.6,
                   help="sampling temperature, >= 0 (0: greedy decoding)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling, in (0, 1]")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help="lowered to fit the model's context (with a message)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    p.add_argument("--prompt", choices=("openr1", "plain"),
                   help="openr1: the Open-R1 math prompt; plain: the problem as is (default: "
                        "openr1 for the math benchmarks, else the model's training prompt)")
    p.add_argument("--no-think", action="store_true", help="do not start with <think>")
    p.add_argument("--grader", choices=GRADERS,
                   help="answer checker (default: exact for the built-in task, else rllm)")
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
    from redi.files import OutputError

    from .runner import evaluate, format_table

    try:
        options = _options(args)
        summary = evaluate(args.model, args.data, args.output_dir, args.benchmark, options,
                           progress=not args.no_progress)
    except (DataError, OutputError, ValueError, FileNotFoundError) as err:
        print(f"redi eval: {err}", file=sys.stderr)
        return 2
    print(format_table(summary))
    return 0


def _options(args):
    """EvalOptions from the flags, with the defaults of ``redi.eval.defaults`` filled in."""
    from dataclasses import replace

    from redi.data.formatting import Formatter
    from redi.data.tokenizer import check_round_trip, load_tokenizer
    from redi.model_dir import check_model_dir

    from .benchmarks import detect_benchmark, load_benchmark
    from .defaults import cap_new_tokens, default_grader, default_prompt, model_context
    from .generation import SamplingSettings
    from .runner import EvalOptions

    # the sampling flags first: a bad value is refused before any work
    sampling = SamplingSettings(args.temperature, args.top_p, args.max_new_tokens, args.seed)
    benchmark = (args.benchmark if args.benchmark != "auto"
                 else detect_benchmark(args.data) or "generic")
    problems = load_benchmark(args.data, args.benchmark)[: args.limit]
    # the model directory's faults first, as the only line of output
    check_model_dir(args.model)
    tokenizer = load_tokenizer(args.model)
    check_round_trip(tokenizer, [p.problem for p in problems])
    style, think, origin = default_prompt(args.model, benchmark)
    if args.prompt is not None:
        style, origin = args.prompt, "--prompt"
    think = think and not args.no_think
    print(f"redi eval: prompt {style}{' + <think>' if think else ''} ({origin})",
          file=sys.stderr)
    max_new_tokens, message = args.max_new_tokens, None
    context = model_context(args.model)
    if context is not None:
        formatter = Formatter(tokenizer, prompt_style=style)
        longest = max(len(formatter.encode_prompt(p.problem, think)) for p in problems)
        max_new_tokens, message = cap_new_tokens(args.max_new_tokens, context, longest)
    if message:
        print(f"redi eval: {message}", file=sys.stderr)
    return EvalOptions(
        samples=args.samples, backend=args.backend, prompt_style=style, think=think,
        batch_size=args.batch_size, limit=args.limit,
        grader=args.grader or default_grader(benchmark),
        sampling=replace(sampling, max_new_tokens=max_new_tokens))
