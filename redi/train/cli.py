"""``redi sft`` (Stage 1) and ``redi train`` (Stage 2): a recipe plus ``key=value`` overrides.

    redi sft --config recipes/tiny_sft.yaml [key=value ...]
    redi train --config recipes/tiny_redi.yaml [loss=redi|dpo|simpo] [key=value ...]

The same command runs as one process or under ``torchrun --nproc_per_node N`` (multi-node
too). Bad configuration, data or checkpoints print one line and exit with status 2; a
diverged run (non-finite loss) exits with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from redi.train.config import ConfigError, build_config, describe, parse_override


def _parser(prog: str, stage: str) -> argparse.ArgumentParser:
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
    args = _parser("redi sft", "Stage-1 (SFT)").parse_args(argv)
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
    args = _parser("redi train", "Stage-2 (REDI, DPO, SimPO)").parse_args(argv)
    try:
        config = build_config(args.config, args.overrides)
        if config.loss == "sft":
            raise ConfigError("redi train is Stage 2: loss must be redi, dpo or simpo "
                              "(use `redi sft` for Stage 1)")
    except ConfigError as err:
        print(f"redi train: {err}", file=sys.stderr)
        return 2
    return _run(config)
