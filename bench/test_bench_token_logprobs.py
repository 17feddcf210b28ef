"""Microbenchmark of the fused token log-prob op (pytest-benchmark; not a timed test).

    pytest bench/ --benchmark-only

CPU, N=4096, H=512, V=32000, fp32, fwd+bwd with a random upstream gradient on every token:
ours (both entries) vs naive full logits vs torch's chunked linear_cross_entropy vs the
3-matmul floor. Peak extra memory is recorded in each result's extra_info. On CUDA the
same cases run at the Qwen2.5-1.5B head shape in bf16, with Liger-Kernel added.
"""

import pytest
import torch
from token_cases import make_problem, token_cases

if torch.cuda.is_available():
    SHAPE, DTYPE, DEVICE, BACKENDS = (16384, 1536, 151936), torch.bfloat16, "cuda", ("triton",)
else:
    SHAPE, DTYPE, DEVICE, BACKENDS = (4096, 512, 32000), torch.float32, "cpu", ("torch",)

_PROBLEM = make_problem(*SHAPE, dtype=DTYPE, device=DEVICE)
CASES = token_cases(*_PROBLEM, backends=BACKENDS)


@pytest.mark.parametrize("case", list(CASES))
def test_token_logprobs_fwd_bwd(bench_case, case):
    bench_case(CASES[case], _PROBLEM[:2], DEVICE, shape=dict(zip("NHV", SHAPE)),
               dtype=str(DTYPE))
