"""Run the demo's per-seed work in parallel processes (``redi demo --workers N``)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor


def threads_per_worker(workers: int) -> int:
    """The CPU cores this process may use, shared evenly by ``workers`` (at least 1)."""
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return max(1, cores // workers)


def _start_worker(threads: int) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()


def map_jobs(fn, jobs: list[tuple], workers: int) -> None:
    """``fn(*job)`` for every job: here when ``workers`` is 1, else in ``workers`` fresh
    (spawned) processes with ``threads_per_worker`` torch threads each. Results are not
    returned: ``fn`` leaves them on disk. A job's error is raised here."""
    if workers == 1:
        for job in jobs:
            fn(*job)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(threads_per_worker(workers),)) as pool:
        for future in [pool.submit(fn, *job) for job in jobs]:
            future.result()
