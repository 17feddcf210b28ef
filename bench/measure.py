"""Median wall time and peak extra memory of one benchmark case.

A case is built, run ``warmup`` times (compilation, allocator and thread-pool warm-up), then
once under the peak-memory measurement of ``memory.py``, then ``repeats`` times under the
clock; CUDA is synchronized around every timed call. A case that runs out of GPU memory is
reported as ``status="oom"`` with no figures instead of stopping the run.
"""

from __future__ import annotations

import gc
import statistics
import time

import torch
from memory import peak_extra_bytes


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn, device, repeats):
    """Wall time of each of ``repeats`` calls of ``fn()``, in seconds."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def measure(build, device, repeats, warmup=1, before_each=lambda: None):
    """{status, time_s (median; None for 0 repeats), times_s, peak_bytes} of ``build()``.

    ``before_each()`` runs before the memory measurement (e.g. to drop the gradients of the
    previous call, so that the peak counts this call's own gradients).
    """
    fn = None
    try:
        fn = build()
        for _ in range(warmup):
            fn()
        before_each()
        peak = peak_extra_bytes(fn, device)
        times = seconds_per_call(fn, device, repeats)
        return {"status": "ok", "time_s": statistics.median(times) if times else None,
                "times_s": times, "peak_bytes": peak}
    except torch.OutOfMemoryError:
        pass  # free the case's tensors outside the handler, whose traceback still holds them
    del fn
    gc.collect()
    torch.cuda.empty_cache()
    return {"status": "oom", "time_s": None, "times_s": [], "peak_bytes": None}
