"""The trainer's commands: ``redi sft`` (Stage 1) and ``redi train`` (Stage 2), a recipe plus
``key=value`` overrides; ``redi plan`` (``redi.train.plan``) and ``redi export``
(``redi.train.export``).

    redi sft --config recipes/tiny_sft.yaml [key=value ...]
    redi train --config recipes/tiny_redi.yaml [loss=redi|dpo|simpo] [key=value ...]
    redi plan --config recipes/tiny_redi.yaml [key=value ...] [--gpu-memory 80GiB] [--nproc N]
    redi export --checkpoint runs/x/checkpoints/step_00000120 --output-dir runs/x/step120

The ``key=value`` overrides may stand anywhere among the options.
``sft`` and ``train`` run as one process or under ``torchrun --nproc_per_node N`` (multi-node
too). Bad configuration, data or checkpoints print one line and exit with status 2; a
diverged run (non-finite loss) exits with status 1, a plan that does not fit with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from redi.cli_options import add_output_dir
from redi.train.config import (
    ConfigError,
    build_config,
    describe,
    fit_micro_batch,
    parse_override,
)


def _parser(prog: str, stage: str) -> argparse.ArgumentParser:
    """The sft/train parser. Like plan's, it is read with ``parse_intermixed_args``: the
    ``key=value`` overrides may come before, between or after the options."""
    parser = argparse.ArgumentParser(
        prog=prog, description=f"{stage} training with FSDP2 (see redi/train/config.py for keys)")
    parser.add_argument("--config", help="a YAML recipe (e.g. recipes/tiny_sft.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override any config key, e.g. max_steps=10 output_dir=runs/x")
    return parser


def _run(config) -> int:
    from redi.data.errors import DataError
    from redi.files import OutputError
    from redi.train.checkpoint import CheckpointError
    from redi.train.export_dir import ExportError
    from redi.train.loop import TrainingDiverged, train

    if os.environ.get("RANK", "0") == "0":
        print(f"redi: effective settings: {describe(config)}", file=sys.stderr)
    try:
        result = train(config)
    except TrainingDiverged as err:
        print(f"redi: training diverged: {err}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, DataError, ExportError, OutputError,
            FileNotFoundError) as err:
        print(f"redi: {err}", file=sys.stderr)
        return 2
    print(result)
    return 0


def sft_main(argv: list[str]) -> int:
    args = _parser("redi sft", "Stage-1 (SFT)").parse_intermixed_args(argv)
    try:
        keys = [parse_override(o)[0] for o in args.overrides]
        if "loss" in keys:
            raise ConfigError("redi sft always trains loss=sft; use `redi train` for Stage 2")
        config = build_config(args.config, args.overrides, loss="sft")
    except ConfigError as err:
        print(f"redi sft: {err}", file=sys.stderr)
        return 2
    return _run(config)


def train_main(argv: list[str]) -> int:
    args = _parser("redi train", "Stage-2 (REDI, DPO, SimPO)").parse_intermixed_args(argv)
    try:
        config = build_config(args.config, args.overrides)
        if config.loss == "sft":
            raise ConfigError("redi train is Stage 2: loss must be redi, dpo or simpo "
                              "(use `redi sft` for Stage 1)")
    except ConfigError as err:
        print(f"redi train: {err}", file=sys.stderr)
        return 2
    return _run(config)


def _plan_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="redi plan", description=(
        "predict the peak memory per device of a redi sft/train run, without loading "
        "weights; print the breakdown, whether it fits and what would make it fit"))
    p.add_argument("--config", help="a YAML recipe (e.g. recipes/tiny_redi.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any training config key")
    p.add_argument("--gpu-memory", default="80GiB",
                   help="memory per device, e.g. 80GiB, 40GB (default 80GiB)")
    p.add_argument("--nproc", type=int, default=1, help="processes (GPUs) sharing the model")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="plan for GPUs (bf16 with dtype=auto) or CPU processes (fp32)")
    return p


def plan_main(argv: list[str]) -> int:
    from redi.train.plan import (
        PlanError,
        model_facts,
        parse_size,
        plan,
        report,
        suggestions,
        suggestions_report,
    )

    args = _plan_parser().parse_intermixed_args(argv)
    try:
        budget = parse_size(args.gpu_memory)
        if args.nproc < 1:
            raise PlanError(f"--nproc must be >= 1, got {args.nproc}")
        config = build_config(args.config, args.overrides, data="builtin")  # data is not read
        config, lowered = fit_micro_batch(config, args.nproc)
        facts = model_facts(config)
    except (ConfigError, PlanError, OSError) as err:
        print(f"redi plan: {err}", file=sys.stderr)
        return 2
    if facts.description:
        print(f"redi plan: planning from the shipped description of {facts.description}: "
              "no weights read")
    if lowered:
        print(f"redi plan: {lowered}")
    result = plan(config, facts, args.nproc, args.device)
    print(report(config, facts, result, budget, args.nproc, args.device))
    if result.peak > budget:
        tried = suggestions(config, facts, args.nproc, args.device, budget)
        print("\n" + suggestions_report(tried, budget))
        return 1
    return 0


def export_main(argv: list[str]) -> int:
    from redi.data.errors import DataError
    from redi.files import OutputError
    from redi.train import export
    from redi.train.checkpoint import CheckpointError
    from redi.train.export_dir import ExportError

    parser = argparse.ArgumentParser(prog="redi export",
                                     description=export.__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a step_XXXXXXXX directory")
    add_output_dir(parser, "the model directory to write (new, empty, or an earlier export)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --output-dir even if it is not an earlier export (a "
                             "directory holding a checkpoint or a run, at any depth, is never "
                             "replaced)")
    args = parser.parse_args(argv)
    try:
        print(export.export_checkpoint(args.checkpoint, args.output_dir, args.overwrite))
    except (CheckpointError, ConfigError, DataError, ExportError, OutputError,
            FileNotFoundError) as err:
        print(f"redi export: {err}", file=sys.stderr)
        return 2
    return 0
