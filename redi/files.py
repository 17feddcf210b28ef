"""Atomic writes: a file or directory appears whole under its final name, or not at all;
the sha256 of a file or of a directory's files (what checkpoints, caches and evaluation
settings record to recognize their inputs); and the one-line errors of an output that cannot
be written (a path that is a file, a full disk).

Everything is written to a hidden temporary sibling and renamed (``os.replace`` is atomic on
one file system), so a crash or a kill mid-write never leaves a truncated result that a
rerun would trust; a write that fails removes its temporary, so a full disk is not left
fuller.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputError(RuntimeError):
    """An output that cannot be written (its path is a file, the disk is full): one line
    naming the directory, exit status 2 at the command line."""


def make_output_dir(path: str | Path) -> Path:
    """Create the output directory ``path`` (and its parents) if needed; OutputError if
    ``path`` is a file or cannot be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path} is a file, not a directory: choose another output directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output directory {path}: "
                          f"{err.strerror or err}") from None
    return path


def no_space(err: BaseException) -> bool:
    """Whether ``err`` (or an error it wraps, as DCP, torch.save and safetensors do) is a
    full disk."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(err)
        if "No space left" in text or "unexpected pos" in text:  # torch's zip writer
            return True
        failures = getattr(err, "failures", None)  # DCP's CheckpointException, per rank
        if isinstance(failures, dict) and any(
                no_space(f[0] if isinstance(f, tuple) else f) for f in failures.values()):
            return True
        err = err.__cause__ or err.__context__
    return False


def no_space_message(directory: str | Path, outcome: str) -> str:
    """The one line of a full disk: where, and what became of the write (``outcome``)."""
    return f"no space left on the device at {directory} ({outcome})"


@contextmanager
def full_disk_reported(directory: str | Path, outcome: str,
                       temporary: Path | None = None) -> Iterator[None]:
    """Run a block that writes into ``directory``. If it fails, ``temporary`` (its partial
    result) is removed, and a full disk becomes a one-line OutputError
    (``no_space_message(directory, outcome)``); other errors pass through."""
    try:
        yield
    except Exception as err:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        if no_space(err):
            raise OutputError(no_space_message(directory, outcome)) from err
        raise


def listing(names: list[str]) -> str:
    """``3 entries: a, b, c`` (the first three names) for a one-line message."""
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} entries: {shown}"


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
