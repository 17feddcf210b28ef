"""Where an export may be written, and what it may hold.

An export replaces its output directory whole, so it must never land on something a user
wants to keep. ``check_export_target`` allows a missing or empty directory, or a previous
export of ours and nothing else (its ``redi_export.json`` lists the files it wrote; a file
added since, such as evaluation results, makes it the user's); any other non-empty
directory only with ``overwrite``; and a directory that holds a training checkpoint or a
run at any depth (a run directory, its ``checkpoints/``, a folder of runs) never.
``check_finite`` refuses weights with a NaN or an infinity: such a model is not worth a
file, and exporting it would hide that the run diverged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from redi.files import listing
from redi.model_dir import EXPORT_MARKER
from redi.train.run_id import RUN_CONFIG, stored_run_id

CHECKPOINT_FILES = {"trainer.json", ".metadata"}  # redi's, and any DCP checkpoint's


class ExportError(RuntimeError):
    """An export that would destroy a directory, or write a broken model."""


def training_state_in(path: Path) -> Path | None:
    """The first directory in ``path`` (itself included, at any depth) that holds a
    checkpoint or a run (a ``checkpoints`` folder, a run's ``config.yaml``); None if none."""
    for root, dirs, files in os.walk(path):
        if "checkpoints" in dirs or CHECKPOINT_FILES & set(files) or (
                RUN_CONFIG in files and stored_run_id(root) is not None):
            return Path(root)
    return None


def is_earlier_export(path: Path) -> bool:
    """Whether ``path`` holds an export of ours and nothing else (its marker lists the
    files the export wrote; a marker without the list is not trusted)."""
    try:
        marker = json.loads((path / EXPORT_MARKER).read_text())
    except (OSError, ValueError):
        return False
    written = marker.get("files") if isinstance(marker, dict) else None
    return isinstance(written, list) and \
        {p.name for p in path.iterdir()} <= {*map(str, written), EXPORT_MARKER}


def check_export_target(path: str | Path, overwrite: bool = False) -> None:
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise ExportError(f"{path} is a file, not a directory: choose another output")
    found = training_state_in(path)
    if found is not None:
        where = "" if found == path else f" (in {found})"
        raise ExportError(f"{path} holds training checkpoints{where} and is never replaced by "
                          "an export: choose another output (e.g. a new directory inside it)")
    entries = sorted(p.name for p in path.iterdir())
    if not entries or overwrite or is_earlier_export(path):
        return
    raise ExportError(f"{path} is not empty and is not a redi export ({listing(entries)}); "
                      "choose another output, or pass --overwrite to replace it")


def mark_export(directory: Path, source: str) -> None:
    """Written last: the marker lists the files of the export (see is_earlier_export)."""
    written = sorted(p.name for p in directory.iterdir())
    (directory / EXPORT_MARKER).write_text(json.dumps({"written_by": "redi", "source": source,
                                                       "files": written}))


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    bad = [name for name, t in state.items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ExportError(f"{source} has non-finite weights ({len(bad)} tensors, e.g. "
                          f"{bad[0]}); not exported")
