"""Process-group set-up: the same code runs as one process or many under torchrun.

One process without torchrun still gets a (world-size 1) process group, so FSDP2 and the
distributed checkpoint run one code path everywhere. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Set once this process has created a process group (see ``exit_process``).
_group_started = False


def init_distributed() -> Distributed:
    """Join (or create) the default process group and pick this process's device."""
    global _group_started
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        device_id = device if device.type == "cuda" else None
        if "RANK" in os.environ:  # launched by torchrun: its environment says where to meet
            dist.init_process_group(backend, device_id=device_id)
        else:  # a plain `python`/`redi` run: a group of one
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}",
                                    rank=0, world_size=1, device_id=device_id)
        _group_started = True
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


def finish():
    """The normal end of a run: wait until every process is done with its collectives, so
    that none tears down its process group while another still talks to it."""
    dist.barrier()


def shutdown():
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_process(status: int) -> None:
    """End a command-line process that ran a process group, skipping interpreter finalization.

    Once DTensors exist (every FSDP2 run), torch keeps the process group referenced from C++,
    so ``destroy_process_group`` does not join gloo's worker threads. A worker that is still
    releasing a finished collective when the interpreter finalizes must take the GIL, which
    finalization refuses by ending the thread, and C++ aborts the process ("terminate called
    without an active exception", SIGABRT): a run that finished and saved everything exits
    with -6 and torchrun reports it failed. Seen in about 1 of 15 two-process runs on a loaded
    2-core machine (core dump: ProcessGroupGloo::runLoop destroying an all-gather's work).
    After ``finish``/``shutdown`` nothing is left to do, so flush and leave with ``os._exit``.
    Returns normally (for ``sys.exit``) when this process never started a group; for the
    command line only: a library caller keeps its interpreter.
    """
    if not _group_started:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def all_sum(value: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum a number or float tensor over all processes (float64 to keep counts exact)."""
    t = torch.as_tensor(value, dtype=torch.float64, device=device).clone()
    dist.all_reduce(t)
    return t


def all_true(flag: bool, device: torch.device) -> bool:
    """True on every process iff ``flag`` is true on every process."""
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(t)
    return t.item() == 0.0
