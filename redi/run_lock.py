"""One run per output directory: an exclusive lock file, ``output_dir/.lock`` (training runs,
``redi prepare`` and ``redi eval``).

The file is created with ``O_EXCL`` and holds the owner's host name and PID. A second run
on the same directory is refused with one line naming the owner; a lock whose process no
longer runs on this host (a run killed with -9, a crashed machine's leftover) is stale and
taken over. The lock is released (removed) when the run ends, however it ends short of a
kill -9.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from redi.files import OutputError, make_output_dir

LOCK_FILE = ".lock"


class OutputDirInUse(OutputError):
    """Another live run holds the output directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _owner(path: Path) -> dict | None:
    """The lock's owner, or None for an unreadable or half-written lock file."""
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


class RunLock:
    """``with RunLock(output_dir):`` holds the directory for the block."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> RunLock:
        make_output_dir(self.path.parent)
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(2):  # the second try follows the removal of a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _owner(self.path)
                if owner is not None and (owner.get("host") != me["host"] or
                                          _alive(owner["pid"])):
                    raise OutputDirInUse(
                        f"{self.path.parent} is in use by another run (pid {owner['pid']} "
                        f"on {owner.get('host')}; lock file {self.path}): wait for it to "
                        "finish or use another output_dir") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self.held = True
            return self
        raise OutputDirInUse(f"could not take the lock {self.path}: another run keeps "
                             "creating it")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
