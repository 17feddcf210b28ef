"""Sharded, atomic, resumable training checkpoints (torch Distributed Checkpoint).

Layout of ``output_dir/checkpoints/step_00000120/``:

* DCP shards of ``{"model": ..., "optim": ...}`` (every rank writes its own shards);
* ``rank{r}.pt``: that rank's RNG states (torch, CUDA, Python) and data-sampler position;
* ``trainer.json``: step, scheduler state, token counters, the model's parameter shapes.

A checkpoint is written into ``step_XXXXXXXX.tmp`` and renamed once every rank has finished,
so a crash mid-write never leaves a directory that looks complete; older checkpoints beyond
``keep_last`` are removed only after the new one exists. Shards need a filesystem that all
nodes share.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)

from redi.files import replace_dir
from redi.train.lora import checkpointed, is_lora

_STEP_DIR = re.compile(r"^step_(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded into this run."""


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (``.tmp`` leftovers of a crash are not listed)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """``auto``: the latest checkpoint of output_dir (None if there is none); ``never``:
    None; anything else: that checkpoint directory, which must exist."""
    if resume == "never":
        return None
    if resume == "auto":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "trainer.json").is_file():
        raise CheckpointError(f"resume={resume}: not a checkpoint directory (no trainer.json)")
    return path


def parameter_shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    """Shapes of the checkpointed parameters (all, or the LoRA adapters)."""
    return checkpointed(model, {name: list(p.shape) for name, p in model.named_parameters()})


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(output_dir, step: int, model, optimizer, trainer_state: dict,
                    sampler_state: dict, keep_last: int) -> Path:
    """Write checkpoint ``step`` (collective: every rank calls it)."""
    rank = dist.get_rank()
    root = checkpoint_root(output_dir)
    final = root / f"step_{step:08d}"
    tmp = root / f"step_{step:08d}.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    model_state = checkpointed(model, model_state)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp))
    torch.save({"rng": _rng_state(), "sampler": sampler_state}, tmp / f"rank{rank}.pt")
    if rank == 0:
        meta = dict(trainer_state, step=step, world_size=dist.get_world_size(),
                    parameter_shapes=parameter_shapes(model))
        (tmp / "trainer.json").write_text(json.dumps(meta, indent=1))
    dist.barrier()
    if rank == 0:
        replace_dir(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old)
    dist.barrier()
    return final


def load_checkpoint(path: str | Path, model, optimizer=None) -> tuple[dict, dict | None]:
    """Restore the model and, to resume, the optimizer and this rank's RNG; return
    (trainer_state, this rank's sampler_state). With ``optimizer=None`` only the weights
    are loaded (DCP reshards them to any process count) and sampler_state is None."""
    path = Path(path)
    meta = json.loads((path / "trainer.json").read_text())
    expected = parameter_shapes(model)
    if meta["parameter_shapes"] != expected:
        missing = sorted(set(expected) - set(meta["parameter_shapes"]))
        differ = sorted(k for k in expected if k in meta["parameter_shapes"]
                        and meta["parameter_shapes"][k] != expected[k])
        raise CheckpointError(
            f"checkpoint {path} does not match the model: parameters missing from it "
            f"{missing[:5]}, shapes that differ {differ[:5]}")
    if optimizer is not None and meta["world_size"] != dist.get_world_size():
        raise CheckpointError(f"checkpoint {path} was written by {meta['world_size']} "
                              f"processes; resume with the same number (now "
                              f"{dist.get_world_size()}) to keep the data order exact")
    model_state, optim_state = get_state_dict(model, optimizer or ())
    model_state = checkpointed(model, model_state)
    state = {"model": model_state} | ({"optim": optim_state} if optimizer else {})
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer or (), model_state_dict=state["model"],
                   optim_state_dict=state.get("optim", {}),
                   options=StateDictOptions(strict=not is_lora(model)))
    if optimizer is None:
        return meta, None
    local = torch.load(path / f"rank{dist.get_rank()}.pt", weights_only=True)
    _set_rng_state(local["rng"])
    return meta, local["sampler"]
