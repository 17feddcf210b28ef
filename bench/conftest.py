"""bench/ modules import each other by name; ``bench_case`` runs one case under pytest-benchmark."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from memory import peak_extra_bytes  # noqa: E402
from token_cases import clear_grads  # noqa: E402


@pytest.fixture
def bench_case(benchmark):
    """bench_case(build, inputs, device, **info): build the case, warm it up, record its peak
    extra memory (gradients of ``inputs`` dropped first) in extra_info, then time 5 rounds."""

    def run(build, inputs, device, **info):
        fn = build()
        fn()
        clear_grads(*inputs)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        benchmark.extra_info.update(
            info, device=device, peak_extra_MiB=round(peak_extra_bytes(fn, device) / 2**20, 1))
        benchmark.pedantic(lambda: (fn(), sync()), rounds=5)
    return run
