"""Where an export may be written, and what it may hold.

An export replaces its output directory whole, so it must never land on something a user
wants to keep. ``check_export_target`` allows a missing or empty directory, or a previous
export of ours (it holds ``redi_export.json``); any other non-empty directory only with
``overwrite``; and a directory that holds training checkpoints (a run directory) never.
``check_finite`` refuses weights with a NaN or an infinity: such a model is not worth a
file, and exporting it would hide that the run diverged.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

EXPORT_MARKER = "redi_export.json"


class ExportError(RuntimeError):
    """An export that would destroy a directory, or write a broken model."""


def holds_checkpoints(path: Path) -> bool:
    return (path / "checkpoints").is_dir() or (path / "trainer.json").is_file() or \
        (path / ".metadata").is_file()


def check_export_target(path: str | Path, overwrite: bool = False) -> None:
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise ExportError(f"{path} is a file, not a directory: choose another output")
    if holds_checkpoints(path):
        raise ExportError(f"{path} holds training checkpoints and is never replaced by an "
                          "export: choose another output (e.g. a new directory inside it)")
    entries = sorted(p.name for p in path.iterdir())
    if not entries or (path / EXPORT_MARKER).is_file() or overwrite:
        return
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise ExportError(f"{path} is not empty and is not a redi export ({len(entries)} entries: "
                      f"{shown}); choose another output, or pass --overwrite to replace it")


def mark_export(directory: Path, source: str) -> None:
    (directory / EXPORT_MARKER).write_text(json.dumps({"written_by": "redi", "source": source}))


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    bad = [name for name, t in state.items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ExportError(f"{source} has non-finite weights ({len(bad)} tensors, e.g. "
                          f"{bad[0]}); not exported")
