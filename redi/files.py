"""Atomic writes: a file or directory appears whole under its final name, or not at all;
and the sha256 of a file or of a directory's files (what checkpoints, caches and evaluation
settings record to recognize their inputs).

Everything is written to a hidden temporary sibling and renamed (``os.replace`` is atomic on
one file system), so a crash or a kill mid-write never leaves a truncated result that a
rerun would trust.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary sibling of ``path`` to write; renamed to ``path`` on success,
    removed on error."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished directory ``tmp`` to ``final``. An existing ``final`` is first
    renamed aside and deleted only afterwards, so a crash in between keeps one whole copy
    (``final`` or ``.<final>.old``). A ``final`` that holds training checkpoints (a run
    directory) is never replaced: FileExistsError."""
    if (final / "checkpoints").is_dir():
        raise FileExistsError(f"{final} holds training checkpoints; it is not replaced")
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _feed(digest, path: Path) -> None:
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)


def sha256_of(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative names and contents,
    in path order)."""
    path = Path(path)
    digest = hashlib.sha256()
    if not path.is_dir():
        _feed(digest, path)
        return digest.hexdigest()
    for file in sorted(path.rglob("*")):
        if file.is_file():
            digest.update(str(file.relative_to(path)).encode())
            _feed(digest, file)
    return digest.hexdigest()
