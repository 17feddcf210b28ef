"""``redi export``: a training checkpoint (DCP shards) to a Hugging Face model directory.

    redi export --checkpoint runs/x/checkpoints/step_00000120 --output-dir runs/x/step120

The run's ``config.yaml`` (two levels above the checkpoint) says which model to build.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from redi.cli_options import add_output_dir
from redi.data.errors import DataError
from redi.train.checkpoint import CheckpointError, load_checkpoint
from redi.train.config import ConfigError, build_config
from redi.train.distributed import finish, init_distributed, shutdown
from redi.train.modeling import build_model, export_hf


def export_checkpoint(checkpoint: str | Path, output: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    run_config = checkpoint.parent.parent / "config.yaml"
    if not run_config.is_file():
        raise CheckpointError(f"{run_config} not found: is {checkpoint} inside a run's "
                              "output_dir/checkpoints?")
    config = build_config(run_config, ["dtype=fp32", "activation_checkpointing=false"])
    from redi.data.tokenizer import load_tokenizer
    from redi.train.loader import tokenizer_source

    env = init_distributed()
    try:
        model = build_model(config, env.device, trainable=False)
        load_checkpoint(checkpoint, model)
        export_hf(model, load_tokenizer(tokenizer_source(config)), output, env.is_main,
                  config.export_adapter)
        finish()
    finally:
        shutdown()
    return Path(output)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="redi export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a step_XXXXXXXX directory")
    add_output_dir(parser, "the model directory to write")
    args = parser.parse_args(argv)
    try:
        print(export_checkpoint(args.checkpoint, args.output_dir))
    except (CheckpointError, ConfigError, DataError, FileNotFoundError) as err:
        print(f"redi export: {err}", file=sys.stderr)
        return 2
    return 0
