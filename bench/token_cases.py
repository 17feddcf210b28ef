"""Forward+backward of per-token log-probs of a linear head, done every way we compare.

Each case is a builder: a zero-argument function that sets up whatever state the case owns
(buffers) and returns a zero-argument callable that runs the forward and a backward with a
fixed random upstream gradient on every token (the general-op contract), leaving the
gradients in ``.grad``. Building lazily lets a runner hold one case's buffers at a time.

The floor is the three matmuls of the same shapes (logits, dx, dW): no fused op can be
faster. Its logits go into a preallocated buffer (the tensor a fused op never holds) and its
dx and dW are allocated per call, so its peak extra memory is that of the gradients alone.
"""

from __future__ import annotations

import importlib.util

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


def clear_grads(*tensors):
    for t in tensors:
        t.grad = None


def floor_3_matmuls(hidden, weight):
    """Builder of the floor for ``hidden [..., H]`` and ``weight [V, H]``."""
    x = hidden.detach().reshape(-1, hidden.shape[-1])
    w = weight.detach()

    def build():
        # zeros, not empty: the pages are touched here, not in the first timed call
        logits = torch.zeros(x.shape[0], w.shape[0], dtype=x.dtype, device=x.device)
        g_logits = torch.randn_like(logits)

        def run():
            torch.mm(x, w.t(), out=logits)
            dx = torch.mm(g_logits, w)
            dw = torch.mm(g_logits.t(), x)
            return dx, dw  # both alive at the peak, like the gradients of the other cases
        return run
    return build


def token_cases(hidden, weight, labels, grad, backends=("torch",)):
    """name -> builder of a fwd+bwd callable (see module docstring)."""
    x, w, y, g = hidden, weight, labels, grad

    def ours_general(backend):
        def run():
            clear_grads(x, w)
            (redi.token_logprobs(x, w, y, backend=backend) * g).sum().backward()
        return run

    def ours_single_pass(backend):
        def run():
            clear_grads(x, w)
            redi.weighted_logprob_sum(x, w, y, g, backend=backend).backward()
        return run

    def naive():
        clear_grads(x, w)
        logp = torch.log_softmax((x @ w.T).float(), dim=-1).gather(1, y[:, None]).squeeze(1)
        (logp * g).sum().backward()

    def torch_linear_cross_entropy():
        clear_grads(x, w)
        nll = F.linear_cross_entropy(x, w, y, reduction="none",
                                     options=torch.nn.LinearCrossEntropyOptions())
        (-nll.float() * g).sum().backward()

    def liger_fused_linear_cross_entropy():
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        def run():
            clear_grads(x, w)
            nll = liger_fused_linear_cross_entropy(x, w, y, reduction="none")
            (-nll.float() * g).sum().backward()
        return run

    def cut_cross_entropy():
        from cut_cross_entropy import linear_cross_entropy

        def run():
            clear_grads(x, w)
            nll = linear_cross_entropy(x, w, y, reduction="none", impl="cce")
            (-nll.float() * g).sum().backward()
        return run

    cases = {}
    for backend in backends:
        cases[f"redi.token_logprobs[{backend}]"] = lambda b=backend: ours_general(b)
        cases[f"redi.weighted_logprob_sum[{backend}]"] = lambda b=backend: ours_single_pass(b)
    cases["naive full logits"] = lambda: naive
    if hasattr(F, "linear_cross_entropy"):
        cases["torch linear_cross_entropy(none)"] = lambda: torch_linear_cross_entropy
    if x.is_cuda:
        cases["liger fused_linear_cross_entropy(none)"] = liger_fused_linear_cross_entropy
        if importlib.util.find_spec("cut_cross_entropy"):
            cases["cut-cross-entropy[cce](none)"] = cut_cross_entropy
    cases["floor: 3 matmuls"] = floor_3_matmuls(x, w)
    return cases
