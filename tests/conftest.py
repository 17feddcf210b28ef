"""Test set-up: Triton runs in its interpreter on CPU-only machines; GPU tests are opt-in."""

import os
import sys

import torch

if not torch.cuda.is_available():
    # Must be set before any Triton kernel is defined (redi.kernels imports Triton lazily).
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if "triton_compile" not in (config.getoption("markexpr") or ""):
        skip_compile = pytest.mark.skip(reason="minutes of compiling: pytest -m triton_compile")
        for item in items:
            if "triton_compile" in item.keywords:
                item.add_marker(skip_compile)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


_SESSION = pytest.StashKey()


def pytest_sessionfinish(session):
    session.config.stash[_SESSION] = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Tests that run FSDP2 in this process (export, demo) leave gloo's worker threads alive
    (see redi.train.distributed.exit_process); end pytest the way the command line ends, after
    every report is written, so that interpreter finalization cannot abort a green run."""
    distributed = sys.modules.get("redi.train.distributed")
    session = config.stash.get(_SESSION, None)
    if distributed is not None and session is not None:
        distributed.exit_process(int(session.exitstatus))


@pytest.fixture(params=[True, False], ids=["many_chunks", "one_chunk"])
def chunking(request, monkeypatch):
    """Force several token/vocab chunks and vocabulary splits, or leave the defaults."""
    from redi.kernels import torch_impl, triton_impl

    if request.param:
        monkeypatch.setattr(torch_impl, "CHUNK_BYTES", 16 * 123 * 4)
        monkeypatch.setattr(triton_impl, "CHUNK_BYTES", 16 * 123 * 4)
        monkeypatch.setattr(triton_impl, "MIN_SPLIT_COLS", 32)
    return request.param
