"""Atomic writes: a file or directory appears whole under its final name, or not at all.

Everything is written to a hidden temporary sibling and renamed (``os.replace`` is atomic on
one file system), so a crash or a kill mid-write never leaves a truncated result that a
rerun would trust.
"""

from __future__ import annotations

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
