"""Microbenchmark of the fused preference losses (pytest-benchmark; not a timed test).

    pytest bench/ --benchmark-only

Fwd+bwd of head + loss on a padded batch of pairs (``loss_cases``): REDI, DPO and SimPO,
ours vs naive full logits vs Liger-Kernel's chunked DPO/SimPO (eager and torch.compile'd,
compiled after the warm-up call) vs torch's chunked linear_cross_entropy feeding REDI, and the
3-matmul floor. CPU: 4 pairs of 512 tokens (4096 tokens), H=512, V=32000, fp32. CUDA: 16
pairs of 512 tokens at the Qwen2.5-1.5B head shape in bf16, both backends, with Liger's fused
linear cross-entropy added. Peak extra memory is recorded in each result's extra_info.
"""

import pytest
import torch
from loss_cases import loss_cases, make_batch

if torch.cuda.is_available():
    SHAPE, DTYPE, DEVICE, BACKENDS = (16, 512, 1536, 151936), torch.bfloat16, "cuda", (
        "triton", "torch")
else:
    SHAPE, DTYPE, DEVICE, BACKENDS = (4, 512, 512, 32000), torch.float32, "cpu", ("torch",)

_BATCH = make_batch(*SHAPE, dtype=DTYPE, device=DEVICE)
CASES = loss_cases(*_BATCH, backends=BACKENDS)


@pytest.mark.parametrize("case", list(CASES), ids=[f"{loss}-{impl}" for loss, impl in CASES])
def test_loss_fwd_bwd(bench_case, case):
    bench_case(CASES[case], _BATCH[:2], DEVICE, shape=dict(zip("BTHV", SHAPE)),
               dtype=str(DTYPE))
