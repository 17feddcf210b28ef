"""Forward+backward of the preference losses on a padded [2B, T] batch, every way we compare.

Each case is a builder (as in ``token_cases``): a zero-argument function that sets up the
case's state and returns a zero-argument callable running the loss and its backward, leaving
the gradients of hidden and weight in ``.grad``. Cases are keyed ``(loss, implementation)``:

* ``ours[<backend>]``: ``redi.FusedLinear{REDI,DPO,SimPO}Loss`` (DPO and SimPO: two-pass);
  ``ours[<backend>, single pass]``: DPO and SimPO with ``single_pass=True``.
* ``naive``: full ``[2B, T, V]`` logits, log_softmax, gather, the pair loss.
* ``torch linear_cross_entropy``: torch's chunked ``F.linear_cross_entropy(reduction="none")``
  giving per-token log-probs; ``liger fused_linear_cross_entropy`` (CUDA only) likewise.
  ``cut-cross-entropy[<impl>]``: Cut Cross-Entropy's ``linear_cross_entropy`` likewise
  (``cce``: its CUDA kernels, the default on CUDA; ``torch_compile``: the one that runs on
  CPU). Their cost does not depend on the pair loss on top, so they feed REDI only.
* ``liger(compiled=...)``: Liger-Kernel's chunked DPO and SimPO (one pair per chunk).
* ``("floor", "3 matmuls")``: ``token_cases.floor_3_matmuls`` on the same shapes.

DPO gets zero reference log-probs everywhere (Liger with ``use_ref_model=False``), so no case
pays for a reference forward: the reference is a trainer concern (see ``step_level``). The
pair losses of the non-fused cases are ``redi.functional``'s, with the hyperparameters in
``HPARAMS``; ``step_level`` builds its losses from the same functions.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from token_cases import clear_grads, floor_3_matmuls

import redi
import redi.functional as LF
from redi.loss_defaults import DPO_BETA, REDI_ALPHA, SIMPO_BETA, SIMPO_GAMMA

LOSSES = ("redi", "dpo", "simpo")
HPARAMS = {"redi": dict(alpha=REDI_ALPHA), "dpo": dict(beta=DPO_BETA),
           "simpo": dict(beta=SIMPO_BETA, gamma=SIMPO_GAMMA)}
_FUSED = {"redi": "FusedLinearREDILoss", "dpo": "FusedLinearDPOLoss",
          "simpo": "FusedLinearSimPOLoss"}


def make_batch(b, t, h, v, dtype=torch.float32, device="cpu", seed=0):
    """[2B, T, H] hidden, [V, H] weight, [2B, T] labels with a 1/8 prompt ignored."""
    gen = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(2 * b, t, h, device=device, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, device=device, generator=gen) / h**0.5).to(dtype)
    labels = torch.randint(0, v, (2 * b, t), device=device, generator=gen)
    labels[:, : t // 8] = -100
    return hidden, weight.requires_grad_(), labels


def naive_token_logps(logits, labels):
    """log_softmax over the full float32 logits, gathered at the labels (any value at -100)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def sequence_logps(token_logps, labels):
    """Per-row sums of the token log-probs over non-ignored labels, and the token counts."""
    valid = labels != -100
    return (token_logps * valid).sum(-1), valid.sum(-1)


def pair_loss(name, seq_logps, lengths, ref_logps=None):
    """Batch loss of ``name`` from ``[2B]`` per-sequence sums (chosen rows first)."""
    b = seq_logps.shape[0] // 2
    chosen, rejected, n_chosen, n_rejected = seq_logps[:b], seq_logps[b:], lengths[:b], lengths[b:]
    if name == "redi":
        return LF.redi_loss(chosen, rejected, n_chosen, n_rejected, **HPARAMS[name])[0]
    if name == "dpo":
        ref = torch.zeros_like(seq_logps) if ref_logps is None else ref_logps
        return LF.dpo_loss(chosen, rejected, ref[:b], ref[b:], **HPARAMS[name])[0]
    return LF.simpo_loss(chosen, rejected, n_chosen, n_rejected, **HPARAMS[name])[0]


def fused_loss(name, backend, single_pass=False):
    """Our fused loss module for ``name`` with ``HPARAMS``."""
    return getattr(redi, _FUSED[name])(**HPARAMS[name], backend=backend,
                                       single_pass=single_pass)


def reference_kwargs(name, ref_logps):
    """DPO's reference keyword arguments from ``[2B]`` summed log-probs (chosen first)."""
    if name != "dpo":
        return {}
    b = ref_logps.shape[0] // 2
    return dict(ref_chosen_logps=ref_logps[:b], ref_rejected_logps=ref_logps[b:])


def _installed(module):
    return importlib.util.find_spec(module) is not None


def _liger(name, compiled):
    from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss, LigerFusedLinearSimPOLoss

    if name == "dpo":
        return LigerFusedLinearDPOLoss(**HPARAMS[name], compiled=compiled, use_ref_model=False)
    return LigerFusedLinearSimPOLoss(**HPARAMS[name], compute_nll_loss=False, compiled=compiled)


def _liger_token_logps(x, w, y):
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    nll = liger_fused_linear_cross_entropy(x.flatten(0, -2), w, y.flatten(), reduction="none")
    return -nll.float().view(y.shape)


def _torch_token_logps(x, w, y):
    nll = F.linear_cross_entropy(x.flatten(0, -2), w, y.flatten(), reduction="none",
                                 options=torch.nn.LinearCrossEntropyOptions())
    return -nll.float().view(y.shape)


def _cce_token_logps(impl):
    def token_logps(x, w, y):
        from cut_cross_entropy import linear_cross_entropy

        return -linear_cross_entropy(x, w, y, reduction="none", impl=impl).float()
    return token_logps


def loss_cases(hidden, weight, labels, backends=("torch",), liger_compiled=(False, True),
               cce_impls=None):
    """(loss, implementation) -> builder of a fwd+bwd callable (see module docstring).
    ``cce_impls``: Cut Cross-Entropy's implementations to run (default: ``cce`` on CUDA when
    it is installed, else none)."""
    if cce_impls is None:
        cce_impls = ("cce",) if hidden.is_cuda and _installed("cut_cross_entropy") else ()
    x, w, y = hidden, weight, labels
    zero_ref = torch.zeros(x.shape[0], device=x.device)

    def ours(name, backend, single_pass=False):
        loss_fn = fused_loss(name, backend, single_pass)
        extra = reference_kwargs(name, zero_ref)

        def run():
            clear_grads(x, w)
            loss_fn(w, x, y, **extra)[0].backward()
        return run

    def from_token_logps(name, token_logps):
        def run():
            clear_grads(x, w)
            pair_loss(name, *sequence_logps(token_logps(x, w, y), y)).backward()
        return run

    def liger(name, compiled):
        loss_fn = _liger(name, compiled)

        def run():
            clear_grads(x, w)
            loss_fn(w, x, y)[0].backward()
        return run

    naive = lambda x, w, y: naive_token_logps(x @ w.T, y)
    cases = {}
    for name in LOSSES:
        for backend in backends:
            cases[(name, f"ours[{backend}]")] = lambda n=name, b=backend: ours(n, b)
            if name != "redi":
                cases[(name, f"ours[{backend}, single pass]")] = \
                    lambda n=name, b=backend: ours(n, b, single_pass=True)
        cases[(name, "naive")] = lambda n=name: from_token_logps(n, naive)
        if name == "redi":
            if hasattr(F, "linear_cross_entropy"):
                cases[(name, "torch linear_cross_entropy")] = \
                    lambda n=name: from_token_logps(n, _torch_token_logps)
            if x.is_cuda:
                cases[(name, "liger fused_linear_cross_entropy")] = \
                    lambda n=name: from_token_logps(n, _liger_token_logps)
            for impl in cce_impls:
                cases[(name, f"cut-cross-entropy[{impl}]")] = \
                    lambda n=name, i=impl: from_token_logps(n, _cce_token_logps(i))
        else:
            for compiled in liger_compiled:
                cases[(name, f"liger(compiled={compiled})")] = \
                    lambda n=name, c=compiled: liger(n, c)
    cases[("floor", "3 matmuls")] = floor_3_matmuls(x, w)
    return cases
