"""Which run an output directory belongs to, decided once when a run starts.

A run continues the directory's run (the ``run_id`` of its ``config.yaml``,
``redi.train.run_id``) with ``resume=auto``, or with ``resume=`` one of that run's
checkpoints. Anything else starts a new run, with a new id, which needs a directory that is
new, empty, or holds only what any run may find there (a stale ``.lock``, the DPO reference
cache, which is checked against its data). Any other directory, another run's included, is
refused with one line unless ``overwrite=true``: then the checkpoints in it are moved aside
to ``checkpoints.before-<new run_id>/`` (never deleted), and the files a run writes
(``config.yaml``, ``metrics.jsonl``, ``final/``) are replaced. ``final/`` is checked as an
export target here, before any work, not only when the run ends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist

from redi.files import listing
from redi.run_lock import LOCK_FILE
from redi.train.checkpoint import checkpoint_root, checkpoint_run_id
from redi.train.config import ConfigError, TrainConfig
from redi.train.export_dir import check_export_target
from redi.train.reference import CACHE_FILE
from redi.train.run_id import new_run_id, stored_run_id

# What a new run may find in its output directory.
REUSABLE = frozenset({LOCK_FILE, CACHE_FILE})


@dataclass(frozen=True)
class RunClaim:
    run_id: str
    continues: bool  # the directory's run goes on (its config.yaml is its settings)


def claim_output_dir(config: TrainConfig, out: Path) -> RunClaim:
    """The run this command is, in ``out`` (see the module docstring). Collective: the main
    process decides and moves checkpoints aside; every process gets its answer, or raises
    its error."""
    answer: list = [None]
    if dist.get_rank() == 0:
        try:
            answer[0] = _claim(config, out)
        except Exception as err:  # raised on every process, so that none waits for another
            answer[0] = err
    dist.broadcast_object_list(answer, src=0)
    if isinstance(answer[0], Exception):
        raise answer[0]
    return answer[0]


def _claim(config: TrainConfig, out: Path) -> RunClaim:
    own = stored_run_id(out)
    if own is not None and (config.resume == "auto" or (
            config.resume != "never" and checkpoint_run_id(Path(config.resume)) == own)):
        check_export_target(out / "final", config.overwrite)
        return RunClaim(own, continues=True)
    others = sorted(p.name for p in out.iterdir() if p.name not in REUSABLE)
    if others and not config.overwrite:
        held = f"it holds run {own}, " if own is not None else ""
        resume = ", resume=auto to continue that run" if own is not None else ""
        raise ConfigError(
            f"{out} is not empty and is not this run's output directory ({held}"
            f"{listing(others)}): use another output_dir{resume}, or overwrite=true to start "
            "a new run in it (its checkpoints are moved aside; config.yaml, metrics.jsonl "
            "and final/ are replaced)")
    check_export_target(out / "final", config.overwrite)
    run_id = new_run_id()
    if checkpoint_root(out).exists():
        os.replace(checkpoint_root(out), out / f"checkpoints.before-{run_id}")
    return RunClaim(run_id, continues=False)
