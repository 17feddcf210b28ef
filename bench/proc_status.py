"""Memory from Linux ``/proc``: a process's resident set (``/proc/<pid>/status``: the current
size VmRSS, the high-water mark VmHWM and its reset through ``/proc/self/clear_refs``) and the
machine's available memory. No side effects on import (``memory.py``, which uses these, also
changes glibc's allocator settings)."""

from __future__ import annotations


def status_bytes(field: str, pid: int | str = "self") -> int:
    """``field`` (e.g. VmRSS, VmHWM) of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def reset_rss_peak() -> None:
    """Reset this process's VmHWM to its current resident set. The kernel's ``ru_maxrss``
    (what a parent's ``wait4`` reports) follows it: after a reset it is the peak since."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def available_bytes() -> int:
    """The machine's MemAvailable (``/proc/meminfo``): what a new process may take without
    swapping or the OOM killer."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable")
