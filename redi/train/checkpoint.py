"""Sharded, atomic, resumable training checkpoints (torch Distributed Checkpoint).

Layout of ``output_dir/checkpoints/step_00000120/``:

* DCP shards of ``{"model": ..., "optim": ...}`` (every rank writes its own shards);
* ``rank{r}.pt``: that rank's RNG states (torch, CUDA, Python) and data-sampler position;
* ``trainer.json``: the id of the run that wrote it (``redi.train.run_id``), step,
  scheduler state, token counters, the model's parameter shapes;
* ``manifest.json``: size and sha256 of every other file (``redi.train.manifest``).

A checkpoint is written into ``step_XXXXXXXX.tmp`` and renamed once every rank has finished,
so a crash mid-write never leaves a directory that looks complete; older checkpoints beyond
``keep_last`` are removed only after the new one exists. A save that fails (a full disk)
removes its ``.tmp`` and raises ``CheckpointError``. Shards need a filesystem that all
nodes share. ``keep_last`` and ``resume=auto`` see only the checkpoints of the run that
asks (its ``run_id``): never another run's that happen to lie in the same directory.

Before a checkpoint is loaded its files are checked against the manifest, and its
``.metadata`` and pickled items are read without running code
(``redi.train.safe_reader``). ``resume=auto`` takes the newest intact checkpoint, with a
warning naming the damaged newer one.
"""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
import sys
import zipfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)

from redi.files import no_space, no_space_message, replace_dir
from redi.train import manifest
from redi.train.lora import checkpointed, is_lora
from redi.train.safe_reader import SafeFileSystemReader, SafeLoadPlanner, UnsafeCheckpoint
from redi.train.trainer_state import TrainerStateError, check_scheduler_state, read_trainer_state

_STEP_DIR = re.compile(r"^step_(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded into this run."""


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_run_id(path: Path) -> str | None:
    """The id of the run that wrote checkpoint ``path`` (None: none readable)."""
    try:
        meta = json.loads((path / "trainer.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("run_id") if isinstance(meta, dict) else None


def step_dirs(output_dir: str | Path) -> list[Path]:
    """Every complete checkpoint directory in output_dir, of any run, oldest first (``.tmp``
    leftovers of a crash are not listed)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def list_checkpoints(output_dir: str | Path, run_id: str | None) -> list[Path]:
    """Run ``run_id``'s complete checkpoints in output_dir, oldest first (not those of
    other runs)."""
    return [p for p in step_dirs(output_dir) if checkpoint_run_id(p) == run_id]


def _share(items: list) -> list:
    """This process's share of ``items`` (every W-th, from its rank)."""
    return items[dist.get_rank()::dist.get_world_size()]


def _gather(value) -> list:
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def checkpoint_problem(path: Path) -> str | None:
    """What is damaged in checkpoint ``path`` (None: its files match its manifest).
    Collective: every rank hashes its share of the files."""
    try:
        entries = manifest.read_manifest(path)
    except ValueError as err:
        return str(err)
    if entries is None:
        return None
    mine = [manifest.file_problem(path, name, entries[name]) for name in _share(sorted(entries))]
    if dist.get_rank() == 0:  # one rank lists the directory, so that all agree
        mine.insert(0, manifest.unlisted_problem(path, entries))
    problems = [p for share in _gather(mine) for p in share if p is not None]
    return problems[0] if problems else None


def resolve_resume(resume: str, output_dir: str | Path, run_id: str) -> Path | None:
    """``auto``: run ``run_id``'s newest intact checkpoint in output_dir (None if there is
    none; a warning names each damaged newer one; CheckpointError if none is intact);
    ``never``: None; anything else: that checkpoint directory, which must exist and be
    intact. Collective."""
    if resume == "never":
        return None
    if resume == "auto":
        damaged = []
        for path in reversed(list_checkpoints(output_dir, run_id)):
            problem = checkpoint_problem(path)
            if problem is None:
                if damaged and dist.get_rank() == 0:
                    for bad, why in damaged:
                        print(f"redi: warning: checkpoint {bad} is damaged ({why}); resuming "
                              f"from {path} instead", file=sys.stderr)
                return path
            damaged.append((path, problem))
        if damaged:
            bad, why = damaged[0]
            raise CheckpointError(f"no intact checkpoint in {checkpoint_root(output_dir)}: "
                                  f"{bad} is damaged ({why}), and so are the older ones; "
                                  "start a new run: another output_dir, or resume=never "
                                  "overwrite=true")
        return None
    path = Path(resume)
    if not (path / "trainer.json").is_file():
        raise CheckpointError(f"resume={resume}: not a checkpoint directory (no trainer.json)")
    check_intact(path)
    return path


def check_intact(path: Path) -> None:
    """CheckpointError naming the damage (and the newest intact checkpoint beside it)."""
    problem = checkpoint_problem(path)
    if problem is None:
        return
    intact = [p for p in list_checkpoints(path.parent.parent, checkpoint_run_id(path))
              if p != path and checkpoint_problem(p) is None]
    other = f"; the newest intact one is {intact[-1]}" if intact else ""
    raise CheckpointError(f"checkpoint {path} is damaged ({problem}){other}")


def check_not_linked(output_dir: str | Path) -> None:
    """CheckpointError naming a checkpoint of output_dir that is a symbolic link: a run
    replaces and removes its checkpoints in place (keep_last), which it cannot do through
    a link, nor should to data kept elsewhere."""
    for path in step_dirs(output_dir):
        if path.is_symlink():
            raise CheckpointError(f"checkpoint {path} is a symbolic link (to {path.resolve()}); "
                                  "a run keeps and removes its checkpoints itself: move the "
                                  "directory back in place of the link, or use another "
                                  "output_dir")


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
                    sampler_state: dict, keep_last: int, *, run_id: str) -> Path:
    """Write checkpoint ``step`` of run ``run_id`` (collective: every rank calls it)."""
    rank = dist.get_rank()
    root = checkpoint_root(output_dir)
    final = root / f"step_{step:08d}"
    tmp = root / f"step_{step:08d}.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    error = None
    try:
        model_state, optim_state = get_state_dict(model, optimizer)
        model_state = checkpointed(model, model_state)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp))
        torch.save({"rng": _rng_state(), "sampler": sampler_state}, tmp / f"rank{rank}.pt")
        if rank == 0:
            meta = dict(trainer_state, run_id=run_id, step=step,
                        world_size=dist.get_world_size(),
                        parameter_shapes=parameter_shapes(model))
            (tmp / "trainer.json").write_text(json.dumps(meta, indent=1))
    except (OSError, RuntimeError, CheckpointException) as err:  # full disk, quota, I/O
        error = err
    _stop_if_failed(error, tmp, root)
    parts = _gather(manifest.digests(tmp, _share(manifest.checkpoint_files(tmp))))
    try:
        if rank == 0:
            manifest.write_manifest(tmp, {k: v for part in parts for k, v in part.items()})
    except OSError as err:
        error = err
    _stop_if_failed(error, tmp, root)
    if rank == 0:
        replace_dir(tmp, final)
        for old in list_checkpoints(output_dir, run_id)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old)
    dist.barrier()
    return final


def _stop_if_failed(error: BaseException | None, tmp: Path, root: Path) -> None:
    """Collective: if the save failed on any rank, remove ``tmp`` and raise a one-line
    CheckpointError on every rank."""
    failed = [e for e in _gather(None if error is None else _write_error(error, root))
              if e is not None]
    if failed:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(failed[0]) from error


def _first_line(err: BaseException) -> str:
    """The first line of ``err``'s message ("" if it has none), for one-line errors."""
    return (str(err).strip().splitlines() or [""])[0]


def _write_error(err: BaseException, root: Path) -> str:
    if no_space(err):
        return no_space_message(root, "checkpoint not saved; free space and rerun with "
                                      "resume=auto")
    return f"could not write a checkpoint in {root}: {_first_line(err) or type(err).__name__}"


def load_checkpoint(path: str | Path, model, optimizer=None,
                    scheduler=None) -> tuple[dict, dict | None]:
    """Restore the model and, to resume, the optimizer, the lr scheduler and this rank's
    RNG; return (trainer_state, this rank's sampler_state). With ``optimizer=None`` only
    the weights are loaded (DCP reshards them to any process count) and sampler_state is
    None. A corrupt, truncated, hand-edited or crafted file is a one-line CheckpointError;
    nothing read from the checkpoint runs code (``redi.train.safe_reader``)."""
    path = Path(path)
    try:
        return _load(path, model, optimizer, scheduler)
    except CheckpointError:
        raise
    except TrainerStateError as err:
        raise CheckpointError(str(err)) from None
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, EOFError,
            pickle.UnpicklingError, zipfile.BadZipFile, CheckpointException) as err:
        cause = _rank_failure(err)
        if isinstance(cause, UnsafeCheckpoint):
            raise CheckpointError(f"refused checkpoint {path}: {cause}") from None
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(cause).__name__}: "
                              f"{_first_line(cause)[:300]})") from err


def _rank_failure(err: BaseException) -> BaseException:
    """What failed inside DCP (its CheckpointException only lists the ranks that failed);
    ``err`` itself for any other error."""
    failures = getattr(err, "failures", None) if isinstance(err, CheckpointException) else None
    if not failures:
        return err
    failure = next(iter(failures.values()))
    return _rank_failure(failure[0] if isinstance(failure, tuple) else failure)


def _load(path: Path, model, optimizer, scheduler) -> tuple[dict, dict | None]:
    reader = SafeFileSystemReader(str(path))
    reader.read_metadata()  # first, so that a crafted file is refused before DCP logs
    meta = read_trainer_state(path, resume=scheduler is not None)
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
    if scheduler is not None:
        check_scheduler_state(path, meta, scheduler.state_dict())
        scheduler.load_state_dict(meta["scheduler"])
    model_state, optim_state = get_state_dict(model, optimizer or ())
    model_state = checkpointed(model, model_state)
    state = {"model": model_state} | ({"optim": optim_state} if optimizer else {})
    dcp.load(state, storage_reader=reader, planner=SafeLoadPlanner())
    set_state_dict(model, optimizer or (), model_state_dict=state["model"],
                   optim_state_dict=state.get("optim", {}),
                   options=StateDictOptions(strict=not is_lora(model)))
    if optimizer is None:
        return meta, None
    return meta, _restore_rank_state(path / f"rank{dist.get_rank()}.pt")


def _restore_rank_state(file: Path) -> dict:
    """Restore this rank's RNG from ``file`` and return its sampler state; a
    CheckpointError naming the file if it is unreadable or not what ``save_checkpoint``
    writes."""
    try:
        local = torch.load(file, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{file} is unreadable ({type(err).__name__}: "
                              f"{_first_line(err)[:300]})") from None
    if not (isinstance(local, dict) and isinstance(local.get("rng"), dict)
            and isinstance(local.get("sampler"), dict)):
        raise CheckpointError(f"{file} is not a rank state: it must hold 'rng' and 'sampler' "
                              "dicts")
    try:
        _set_rng_state(local["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{file}: its RNG state cannot be restored "
                              f"({type(err).__name__}: {err})") from None
    return local["sampler"]
