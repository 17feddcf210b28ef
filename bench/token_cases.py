"""Forward+backward of per-token log-probs of a linear head, done every way we compare.

Each case is a zero-argument callable that runs the forward and a backward with a fixed
random upstream gradient on every token (the general-op contract) and leaves the gradients
in ``.grad``. The floor is the three matmuls of the same shapes (logits, dx, dW) into
preallocated outputs: no fused op can beat it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import redi


def make_problem(n, h, v, dtype=torch.float32, device="cpu", seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(n, h, device=device, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, device=device, generator=gen) / h**0.5).to(dtype)
    labels = torch.randint(0, v, (n,), device=device, generator=gen)
    grad = torch.randn(n, device=device, generator=gen)
    return hidden, weight.requires_grad_(), labels, grad


def _clear(*tensors):
    for t in tensors:
        t.grad = None


def token_cases(hidden, weight, labels, grad, backends=("torch",)):
    """name -> callable running fwd+bwd (see module docstring)."""
    x, w, y, g = hidden, weight, labels, grad

    def ours_general(backend):
        def run():
            _clear(x, w)
            (redi.token_logprobs(x, w, y, backend=backend) * g).sum().backward()
        return run

    def ours_single_pass(backend):
        def run():
            _clear(x, w)
            redi.weighted_logprob_sum(x, w, y, g, backend=backend).backward()
        return run

    def naive():
        _clear(x, w)
        logp = torch.log_softmax((x @ w.T).float(), dim=-1).gather(1, y[:, None]).squeeze(1)
        (logp * g).sum().backward()

    def torch_linear_cross_entropy():
        _clear(x, w)
        nll = F.linear_cross_entropy(x, w, y, reduction="none",
                                     options=torch.nn.LinearCrossEntropyOptions())
        (-nll.float() * g).sum().backward()

    logits = torch.empty(x.shape[0], w.shape[0], dtype=x.dtype, device=x.device)
    g_logits = torch.randn_like(logits)
    dx, dw = torch.empty_like(x), torch.empty_like(w)

    def floor_3_matmuls():
        with torch.no_grad():
            torch.mm(x, w.t(), out=logits)
            torch.mm(g_logits, w, out=dx)
            torch.mm(g_logits.t(), x, out=dw)

    cases = {}
    for backend in backends:
        cases[f"redi.token_logprobs[{backend}]"] = ours_general(backend)
        cases[f"redi.weighted_logprob_sum[{backend}]"] = ours_single_pass(backend)
    cases["naive full logits"] = naive
    if hasattr(F, "linear_cross_entropy"):
        cases["torch linear_cross_entropy(none)"] = torch_linear_cross_entropy
    if x.is_cuda:
        cases["liger fused_linear_cross_entropy(none)"] = _liger_case(x, w, y, g)
    cases["floor: 3 matmuls"] = floor_3_matmuls
    return cases


def _liger_case(x, w, y, g):
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    def run():
        _clear(x, w)
        nll = liger_fused_linear_cross_entropy(x, w, y, reduction="none")
        (-nll.float() * g).sum().backward()

    return run
