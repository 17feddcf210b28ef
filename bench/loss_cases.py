"""Forward+backward of the preference losses on a padded [2B, T] batch, every way we compare.

Each case is a zero-argument callable that runs the loss and its backward, leaving the
gradients of hidden and weight in ``.grad``. DPO gets zero reference log-probs everywhere
(Liger with ``use_ref_model=False``), so no case pays for a reference forward: the reference
is a trainer concern (cached, or a second model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import redi

LOSSES = ("redi", "dpo", "simpo")


def make_batch(b, t, h, v, dtype=torch.float32, device="cpu", seed=0):
    """[2B, T, H] hidden, [V, H] weight, [2B, T] labels with a 1/8 prompt ignored."""
    gen = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(2 * b, t, h, device=device, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, device=device, generator=gen) / h**0.5).to(dtype)
    labels = torch.randint(0, v, (2 * b, t), device=device, generator=gen)
    labels[:, : t // 8] = -100
    return hidden, weight.requires_grad_(), labels


def _naive_pair_loss(name, lp, n):
    b = lp.shape[0] // 2
    if name == "redi":
        return (-lp[:b] / n[:b] + 0.8 * lp[b:] / n[b:]).mean()
    if name == "dpo":
        return -F.logsigmoid(0.1 * (lp[:b] - lp[b:])).mean()
    return -F.logsigmoid(2.0 * (lp[:b] / n[:b] - lp[b:] / n[b:]) - 1.0).mean()


def _ours(name, backend):
    if name == "redi":
        return redi.FusedLinearREDILoss(alpha=0.8, backend=backend)
    if name == "dpo":
        return redi.FusedLinearDPOLoss(beta=0.1, backend=backend)
    return redi.FusedLinearSimPOLoss(beta=2.0, gamma=1.0, backend=backend)


def _liger(name, compiled):
    from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss, LigerFusedLinearSimPOLoss

    if name == "dpo":
        return LigerFusedLinearDPOLoss(beta=0.1, compiled=compiled, use_ref_model=False)
    return LigerFusedLinearSimPOLoss(beta=2.0, gamma=1.0, compute_nll_loss=False,
                                     compiled=compiled)


def loss_cases(hidden, weight, labels, backends=("torch",), liger_compiled=(False, True)):
    """(loss name, implementation) -> callable running fwd+bwd."""
    x, w, y = hidden, weight, labels
    b = x.shape[0] // 2
    zeros = torch.zeros(b, device=x.device)

    def clear():
        x.grad = w.grad = None

    def run_ours(name, backend):
        loss_fn = _ours(name, backend)
        extra = dict(ref_chosen_logps=zeros, ref_rejected_logps=zeros) if name == "dpo" else {}

        def run():
            clear()
            loss_fn(w, x, y, **extra)[0].backward()
        return run

    def run_naive(name):
        def run():
            clear()
            logp = torch.log_softmax((x @ w.T).float(), dim=-1)
            valid = y != -100
            logp = logp.gather(-1, y.clamp(min=0)[..., None]).squeeze(-1) * valid
            _naive_pair_loss(name, logp.sum(-1), valid.sum(-1)).backward()
        return run

    def run_liger(name, compiled):
        loss_fn = _liger(name, compiled)

        def run():
            clear()
            loss_fn(w, x, y)[0].backward()
        return run

    cases = {}
    for name in LOSSES:
        for backend in backends:
            cases[(name, f"redi[{backend}]")] = run_ours(name, backend)
        cases[(name, "naive")] = run_naive(name)
        if name != "redi":
            for compiled in liger_compiled:
                cases[(name, f"liger(compiled={compiled})")] = run_liger(name, compiled)
    return cases
