"""The demo's resumable pieces and the record each keeps of how it was made.

A piece is a folder the demo fills once and reuses on a rerun: the data, Stage 1 of a seed,
each Stage-2 run, each evaluation, each pair scoring. Reusing a folder because it exists
served stale work: ``make demo`` after ``redi demo --quick`` reused the quick run's small
data and one-epoch Stage 1, and ``--task slips`` into an existing folder reused another
task's data under the new name. So each piece writes its settings (task, sizes, seed,
epochs, learning rate, k, temperature, ..., and the identity of the piece it was made
from) to ``piece.json`` in its folder before any of its work, and every later run that
wants the folder compares: the same settings resume or reuse it, other settings are refused
with one line naming the folder and the first setting that differs (``StalePiece``). A
non-empty folder without a record (made by an older ``redi demo``) is refused too.

A piece's identity is a hash of its record, which holds its input's identity, so a piece
made from another Stage 1 or other data never matches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

RECORD = "piece.json"
_ABSENT = "(not recorded)"


class StalePiece(ValueError):
    """A folder that holds a piece made with other settings than this run's (one line)."""


@dataclass(frozen=True)
class Piece:
    folder: Path
    identity: str


def identity(settings: dict) -> str:
    """A short hash of a piece's settings (key order ignored)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def claim(folder: Path, settings: dict) -> Piece:
    """``folder`` as the piece ``settings`` describe: recorded now if the folder is new (or
    empty), checked against its record otherwise (``StalePiece`` if they differ)."""
    from redi.files import atomic_write_text

    settings = json.loads(json.dumps(settings))  # as the record reads back (tuples: lists)
    record = folder / RECORD
    if record.is_file():
        stored = json.loads(record.read_text())
        for key in [*settings, *(k for k in stored if k not in settings)]:
            old, new = stored.get(key, _ABSENT), settings.get(key, _ABSENT)
            if old != new:
                raise StalePiece(
                    f"{folder} was made with {key}={old!r}, this run asks for {key}={new!r}: "
                    f"use another --output-dir (or remove {folder} to redo that piece)")
    elif folder.is_dir() and any(folder.iterdir()):
        raise StalePiece(f"{folder} holds no record of the settings it was made with ({RECORD}; "
                         "an older redi demo made it): use another --output-dir (or remove "
                         f"{folder})")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps(settings, indent=1) + "\n")
    return Piece(folder, identity(settings))
