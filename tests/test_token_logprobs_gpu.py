"""CUDA tests of the Triton backend: compiled kernels, autotuned tiles, the Qwen2.5-1.5B head.

Skipped without CUDA (conftest.py); run with `pytest -m gpu`. The CPU tests cover the same
logic under the Triton interpreter.
"""

import pytest
import torch
from reference import leaf64, token_logprobs64

import redi

pytestmark = pytest.mark.gpu


def chunked_reference64(hidden, weight, labels, grad, rows=1024):
    """float64 values and gradients of sum(grad * logp), walking rows so it fits in memory."""
    x, w = hidden.double(), weight.double()
    logp = torch.zeros(labels.shape, dtype=torch.float64, device=x.device)
    dx, dw = torch.empty_like(x), torch.zeros_like(w)
    for r in range(0, x.shape[0], rows):
        z = x[r:r + rows] @ w.T
        y = labels[r:r + rows]
        valid = y != -100
        p = torch.softmax(z, dim=-1)
        lp = torch.log_softmax(z, dim=-1).gather(1, y.clamp(min=0)[:, None]).squeeze(1)
        logp[r:r + rows] = torch.where(valid, lp, 0.0)
        g = torch.where(valid, grad[r:r + rows].double(), 0.0)
        dz = -g[:, None] * p
        dz[valid, y[valid]] += g[valid]
        dx[r:r + rows] = dz @ w
        dw += dz.T @ x[r:r + rows]
    return logp, dx, dw


def naive_bf16(hidden, weight, labels, grad):
    x, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    valid = labels != -100
    logp = torch.log_softmax(x @ w.T, dim=-1).gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    logp = logp * valid
    (logp * grad.to(logp.dtype)).sum().backward()
    return logp.detach(), x.grad, w.grad


def max_err(a, b):
    return (a.double() - b).abs().max().item()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_fp32_odd_shapes_match_float64(bias, temperature):
    gen = torch.Generator(device="cuda").manual_seed(0)
    n, h, v = 1001, 200, 5003
    kw = dict(device="cuda", generator=gen)
    hidden = torch.randn(n, h, **kw).requires_grad_()
    weight = (torch.randn(v, h, **kw) * 0.1).requires_grad_()
    b = torch.randn(v, **kw).requires_grad_() if bias else None
    labels = torch.randint(0, v, (n,), **kw)
    labels[::7] = -100
    grad = torch.randn(n, **kw)
    x64, w64, b64 = leaf64(hidden), leaf64(weight), leaf64(b)
    ref = token_logprobs64(x64, w64, labels, b64, temperature)
    (ref * grad.double()).sum().backward()
    for entry in ("token_logprobs", "weighted_logprob_sum"):
        for t in (hidden, weight, b):
            if t is not None:
                t.grad = None
        if entry == "token_logprobs":
            logp = redi.token_logprobs(hidden, weight, labels, bias=b, temperature=temperature)
            (logp * grad).sum().backward()
            torch.testing.assert_close(logp.double(), ref.detach(), rtol=1e-4, atol=1e-4)
        else:
            total = redi.weighted_logprob_sum(hidden, weight, labels, grad, bias=b,
                                              temperature=temperature)
            total.backward()
            torch.testing.assert_close(total.double(), (ref * grad.double()).sum().detach(),
                                       rtol=1e-4, atol=1e-2)
        # TF32 may be used by cuBLAS for the gradient GEMMs only if the user enabled it.
        torch.testing.assert_close(hidden.grad.double(), x64.grad, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(weight.grad.double(), w64.grad, rtol=1e-3, atol=1e-4)
        if bias:
            torch.testing.assert_close(b.grad.double(), b64.grad, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("entry", ["token_logprobs", "weighted_logprob_sum"])
def test_qwen_head_bf16_no_worse_than_naive_bf16(entry):
    """Qwen2.5-1.5B head (H=1536, V=151936), N=16384 tokens, bf16."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    n, h, v = 16384, 1536, 151936
    kw = dict(device="cuda", generator=gen)
    hidden = torch.randn(n, h, **kw).bfloat16().requires_grad_()
    weight = (torch.randn(v, h, **kw) * 0.05).bfloat16().requires_grad_()
    labels = torch.randint(0, v, (n,), **kw)
    labels[: n // 8] = -100
    grad = torch.randn(n, **kw)
    ref = chunked_reference64(hidden.detach(), weight.detach(), labels, grad)
    naive = naive_bf16(hidden, weight, labels, grad)
    del_naive_memory = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    if entry == "token_logprobs":
        logp = redi.token_logprobs(hidden, weight, labels)
        (logp * grad).sum().backward()
        assert max_err(logp, ref[0]) <= max_err(naive[0], ref[0])
    else:
        redi.weighted_logprob_sum(hidden, weight, labels, grad).backward()
    extra = torch.cuda.max_memory_allocated() - del_naive_memory
    assert hidden.grad.dtype == weight.grad.dtype == torch.bfloat16
    assert max_err(hidden.grad, ref[1]) <= max_err(naive[1], ref[1])
    assert max_err(weight.grad, ref[2]) <= max_err(naive[2], ref[2])
    # One bounded chunk (512 MiB) + fp32 accumulators + the grads; one N x V bf16 tensor
    # alone would be 4.6 GiB, and naive holds several.
    assert extra < n * v * 2 / 2, f"extra peak {extra / 2**30:.2f} GiB"
