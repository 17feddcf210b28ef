"""``redi export``: a training checkpoint (DCP shards) to a Hugging Face model directory.

    redi export --checkpoint runs/x/checkpoints/step_00000120 --output-dir runs/x/step120

The run's ``config.yaml`` (two levels above the checkpoint) says which model to build. The
checkpoint is checked against its manifest first. ``--output`` must be new, empty or an
earlier export (``--overwrite`` replaces another directory; a directory that holds a
checkpoint or a run at any depth is never replaced), and non-finite weights are not
exported. A full disk is one line; the partial export is removed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from redi.train.checkpoint import CheckpointError, check_intact, load_checkpoint
from redi.train.config import build_config
from redi.train.distributed import finish, init_distributed, shutdown
from redi.train.export_dir import check_export_target
from redi.train.modeling import build_model, export_hf


def export_checkpoint(checkpoint: str | Path, output: str | Path,
                      overwrite: bool = False) -> Path:
    checkpoint = Path(checkpoint)
    check_export_target(output, overwrite)  # before any work
    run_config = checkpoint.parent.parent / "config.yaml"
    if not run_config.is_file():
        raise CheckpointError(f"{run_config} not found: is {checkpoint} inside a run's "
                              "output_dir/checkpoints?")
    config = build_config(run_config, ["dtype=fp32", "activation_checkpointing=false"])
    from redi.data.tokenizer import load_tokenizer
    from redi.train.loader import prepared_file, tokenizer_source, training_prompt

    data_file = prepared_file(config, checkpoint.parent.parent)
    prompt = training_prompt(data_file) if data_file.is_file() else None
    if prompt is None:
        print(f"redi export: warning: {data_file} (the run's data) is gone, so the export "
              "has no training_prompt.json; redi eval will use the problem text as is with "
              "<think>", file=sys.stderr)

    env = init_distributed()
    try:
        check_intact(checkpoint)
        model = build_model(config, env.device, trainable=False)
        load_checkpoint(checkpoint, model)
        export_hf(model, load_tokenizer(tokenizer_source(config)), output, env.is_main,
                  config.export_adapter, source=str(checkpoint), overwrite=overwrite,
                  training_prompt=prompt)
        finish()
    finally:
        shutdown()
    return Path(output)
