"""A digest manifest of a checkpoint's files: ``manifest.json`` = {file name: [size, sha256]}.

Written last into a checkpoint (before the directory is renamed into place) and checked
before a checkpoint is resumed or exported, so that a shard damaged on disk (a bad sector,
a partial copy, an edit) is found before its bytes become weights. It covers the whole
directory: a file it does not list, or a listed file that is missing, is damage too.
Hashing is split over the processes (process r takes every W-th file), so a save or a
check costs one read of 1/W of the checkpoint per process.
"""

from __future__ import annotations

import json
from pathlib import Path

from redi.files import sha256_of

MANIFEST = "manifest.json"


def checkpoint_files(directory: Path) -> list[str]:
    """The files a manifest covers (every file of the directory but the manifest)."""
    return sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST)


def digests(directory: Path, names: list[str]) -> dict[str, list]:
    return {name: [(directory / name).stat().st_size, sha256_of(directory / name)]
            for name in names}


def write_manifest(directory: Path, entries: dict[str, list]) -> None:
    (directory / MANIFEST).write_text(json.dumps(dict(sorted(entries.items())), indent=1))


def read_manifest(directory: Path) -> dict[str, list] | None:
    """The manifest's entries; None for a checkpoint written before manifests existed
    (taken as it is: nothing to check it against). Raises ValueError if unreadable."""
    try:
        entries = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"unreadable {MANIFEST} ({err})") from None
    if not isinstance(entries, dict) or not all(
            isinstance(e, list) and len(e) == 2 for e in entries.values()):
        raise ValueError(f"unreadable {MANIFEST}")
    return entries


def unlisted_problem(directory: Path, entries: dict[str, list]) -> str | None:
    """A file of the directory the manifest does not list (None: it lists them all). Such a
    file would never be checked: a shard whose entry was deleted could hold anything."""
    unlisted = [name for name in checkpoint_files(directory) if name not in entries]
    return f"{unlisted[0]} is not listed in {MANIFEST}" if unlisted else None


def file_problem(directory: Path, name: str, entry: list) -> str | None:
    """What is wrong with one listed file (None: its size and digest match)."""
    file = directory / name
    if not file.is_file():
        return f"{name} is missing"
    if file.stat().st_size != entry[0]:
        return f"{name} has {file.stat().st_size} bytes, not {entry[0]}"
    if sha256_of(file) != entry[1]:
        return f"{name} does not match its sha256 digest"
    return None
