"""Peak extra memory and median wall time of a set of benchmark cases, measured side by side.

A case is a builder: a zero-argument function returning the callable to measure. Pass 1
takes the cases one at a time: build, run ``warmup`` times (compilation, allocator and
thread-pool warm-up), run once under the peak-memory measurement of ``memory.py``, drop.
Pass 2 runs ``repeats`` rounds; in each, every case is built and timed once (CUDA
synchronized around the call), so a slow phase of a shared machine slows all the cases of a
round alike and the ratios of the medians stay meaningful. A builder may rebuild its state
(the loss cases: cheap, and warm after pass 1) or hand back an object built once (the
training steps). On CPU every case is timed under the allocator setting the memory
measurement needs (allocations above 64 KiB are fresh mappings), the same for all.

A case that runs out of GPU memory gets ``status="oom"`` and no figures instead of
stopping the run.
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


def _unless_oom(task):
    """``task()``, or None if it ran out of GPU memory."""
    try:
        return task()
    except torch.OutOfMemoryError:
        pass
    # freed here, not in the handler, whose traceback still holds the case's tensors
    gc.collect()
    torch.cuda.empty_cache()
    return None


def _warm_peak(build, device, warmup, before_each):
    fn = build()
    for _ in range(warmup):
        fn()
    before_each()
    return peak_extra_bytes(fn, device)


def measure_cases(builds, device, repeats, warmup=1, before_each=lambda: None):
    """{key: {status, time_s (median; None for 0 repeats), times_s, peak_bytes}} for every
    builder of ``builds`` (see module docstring).

    ``before_each()`` runs before each memory measurement (e.g. to drop the gradients of the
    previous call, so that the peak counts the case's own gradients).
    """
    peaks = {key: _unless_oom(lambda b=build: _warm_peak(b, device, warmup, before_each))
             for key, build in builds.items()}
    times = {key: [] for key, peak in peaks.items() if peak is not None}
    for _ in range(repeats):
        for key in list(times):
            seconds = _unless_oom(lambda k=key: seconds_per_call(builds[k](), device, 1)[0])
            if seconds is None:
                del times[key]
            else:
                times[key].append(seconds)
    return {key: {"status": "ok", "time_s": statistics.median(times[key]) if repeats else None,
                  "times_s": times[key], "peak_bytes": peak}
            if key in times else
            {"status": "oom", "time_s": None, "times_s": [], "peak_bytes": None}
            for key, peak in peaks.items()}
