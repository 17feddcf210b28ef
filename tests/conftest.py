"""Test set-up: Triton runs in its interpreter on CPU-only machines; GPU tests are opt-in."""

import os

import torch

if not torch.cuda.is_available():
    # Must be set before any Triton kernel is defined (redi.kernels imports Triton lazily).
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=[True, False], ids=["many_chunks", "one_chunk"])
def chunking(request, monkeypatch):
    """Force several token/vocab chunks and vocabulary splits, or leave the defaults."""
    from redi.kernels import torch_impl, triton_impl

    if request.param:
        monkeypatch.setattr(torch_impl, "CHUNK_BYTES", 16 * 123 * 4)
        monkeypatch.setattr(triton_impl, "CHUNK_BYTES", 16 * 123 * 4)
        monkeypatch.setattr(triton_impl, "MIN_SPLIT_COLS", 32)
    return request.param
