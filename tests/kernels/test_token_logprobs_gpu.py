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


@pytest.mark.parametrize("softcap", [None, 2.0])  # logits of spread ~1.4: 2 bends them
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_fp32_odd_shapes_match_float64(bias, temperature, softcap):
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
    ref = token_logprobs64(x64, w64, labels, b64, temperature, softcap=softcap)
    (ref * grad.double()).sum().backward()
    for entry in ("token_logprobs", "weighted_logprob_sum"):
        for t in (hidden, weight, b):
            if t is not None:
                t.grad = None
        if entry == "token_logprobs":
            logp = redi.token_logprobs(hidden, weight, labels, bias=b, temperature=temperature,
                                       softcap=softcap)
            (logp * grad).sum().backward()
            torch.testing.assert_close(logp.double(), ref.detach(), rtol=1e-4, atol=1e-4)
        else:
            total = redi.weighted_logprob_sum(hidden, weight, labels, grad, bias=b,
                                              temperature=temperature, softcap=softcap)
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


def test_sequence_group_loss_qwen_head_bf16_no_worse_than_naive_bf16():
    """A SimPO pair loss through the single-pass group op: 4 pairs of 1024 tokens at the
    Qwen2.5-1.5B head, bf16, against float64 and against the same loss in plain bf16."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    pairs, t, h, v = 4, 1024, 1536, 151936
    n = 2 * pairs * t
    kw = dict(device="cuda", generator=gen)
    hidden = torch.randn(n, h, **kw).bfloat16().requires_grad_()
    weight = (torch.randn(v, h, **kw) * 0.05).bfloat16().requires_grad_()
    labels = torch.randint(0, v, (n,), **kw)
    seq_index = torch.arange(2 * pairs, device="cuda").repeat_interleave(t)
    labels[(torch.arange(n, device="cuda") % t) < 128] = -100  # prompts
    groups = torch.stack([torch.arange(pairs), torch.arange(pairs) + pairs], 1).cuda()
    lengths = torch.bincount(seq_index[labels != -100], minlength=2 * pairs)

    def loss_fn(s):
        avg = s / lengths.to(s.dtype)
        return -torch.nn.functional.logsigmoid(
            2.0 * (avg[groups[:, 0]] - avg[groups[:, 1]]) - 1.0).mean()

    x, w = hidden.detach(), weight.detach()
    logp64 = chunked_reference64(x, w, labels, torch.zeros(n, device="cuda"))[0]
    sums64 = torch.zeros(2 * pairs, dtype=torch.float64, device="cuda")
    sums64 = sums64.index_add(0, seq_index, logp64).requires_grad_()
    loss64 = loss_fn(sums64)
    (seq_grads,) = torch.autograd.grad(loss64, sums64)
    _, dx64, dw64 = chunked_reference64(x, w, labels, seq_grads[seq_index])

    xn, wn = x.clone().requires_grad_(), w.clone().requires_grad_()
    valid = labels != -100
    logp = torch.log_softmax(xn @ wn.T, dim=-1).gather(1, labels.clamp(min=0)[:, None])
    sums = torch.zeros(2 * pairs, dtype=torch.bfloat16, device="cuda")
    naive_loss = loss_fn(sums.index_add(0, seq_index, logp.squeeze(1) * valid))
    naive_loss.backward()
    del logp
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    loss, _ = redi.sequence_group_loss(hidden, weight, labels, seq_index, groups, loss_fn)
    loss.backward()
    extra = torch.cuda.max_memory_allocated() - before
    assert max_err(loss, loss64.detach()) <= max_err(naive_loss, loss64.detach())
    assert max_err(hidden.grad, dx64) <= max_err(xn.grad, dx64)
    assert max_err(weight.grad, dw64) <= max_err(wn.grad, dw64)
    # three float32 [V, H] buffers (0.87 GiB each), one 512 MiB chunk, the grads, dx in fp32
    bound = 3 * v * h * 4 + 512 * 2**20 + v * h * 2 + 3 * n * h * 4
    assert extra < bound * 1.1, f"extra peak {extra / 2**30:.2f} GiB"
