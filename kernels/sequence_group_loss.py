"""Single pass for a loss of per-sequence log-prob sums made of one term per group of
sequences (DPO, SimPO and reweighted REDI: one term per (chosen, rejected) pair).

With logp_i the token log-probs of ``linear_logprobs`` and sequence q's sum s_q::

    s_q = sum_{i in q} logp_i,        L = F(s) = sum_g f_g(s_q for q in group g)

every token i of q has dL/dlogp_i = G_q = dF/ds_q: one scalar per sequence, which depends
on the sums of q's group alone but is known only once they are. The two-pass op
(``token_logprobs``) learns it after its forward and recomputes the logits in backward:
4 matmul-equivalents. Here, group after group:

1. for each sequence q of the group, the single pass with coefficient 1 on q's tokens gives
   s_q and the gradients of s_q: q's rows of dx, and dW_q, db_q in a buffer of its own;
2. G_q = dF/ds_q at the group's sums, by autograd through ``loss_fn`` (a few scalars);
3. dx rows of q = G_q dx_q,  dW += sum_q G_q dW_q,  db += sum_q G_q db_q.

With per-token floors f_i (``logprob_floor``, REDI's ``negative_floor``) the sums are
s_q = sum_{i in q} max(logp_i, f_i): step 1 runs the single pass with coefficient
1[logp_i >= f_i], decided in the pass once logp_i is known (``forward_backward``'s floor).

Cost: the 3 matmuls of the single pass plus one [V, H] scale-and-add per sequence. Memory:
the single pass's, plus K compute-dtype (float32) [V, H] buffers, K = sequences per group (2
for pairs), and the float32 dW accumulator. It beats the recomputation when the matmul
saved on a sequence of T tokens (2 T V H flops) costs more than that pass (about 12 V H bytes
of traffic): T > 6 x the machine's flops per byte. A GPU has many more flops per byte than
a CPU, so shorter sequences on a GPU are better served by the two-pass op (the crossover
figures for a CPU and an H100: ``bench/results/cpu-2026-11-26/README.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .backend import select_backend
from .linear_logprobs import (
    check_inputs,
    check_per_token,
    first_order_only,
    flatten_inputs,
    grads_needed,
    hand_over_grads,
    logp_dtype,
)


def _loss_and_grad(loss_fn, sums):
    """(loss, dloss/dsums) of ``loss_fn`` at ``sums``, both detached."""
    with torch.enable_grad():
        s = sums.detach().requires_grad_()
        loss = loss_fn(s)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        if not loss.requires_grad:
            return loss.detach().reshape(()), torch.zeros_like(s)
        (grad,) = torch.autograd.grad(loss, s, allow_unused=True)
    return loss.detach().reshape(()), torch.zeros_like(s) if grad is None else grad


class _GroupGradients:
    """Compute-dtype accumulators of dx, dW, db, and the per-sequence dW buffers of a group."""

    def __init__(self, x, w, b, needs, dtype, group_size):
        need_x, need_w, need_b = needs
        self.dtypes = (x.dtype, w.dtype, None if b is None else b.dtype)
        new = dict(dtype=dtype, device=x.device)
        self.dx = torch.zeros(x.shape, **new) if need_x else None
        self.dw = torch.zeros(w.shape, **new) if need_w else None
        self.db = torch.zeros(w.shape[0], **new) if (need_b and b is not None) else None
        self.buffers = [torch.empty(w.shape, **new) if need_w else None
                        for _ in range(group_size)]

    def add(self, rows, grads, scale):
        """Add the gradients (dx_q, dW_q, db_q) of one sequence's sum, times ``scale``."""
        dx_q, dw_q, db_q = grads
        if self.dx is not None:
            self.dx.index_copy_(0, rows, dx_q.to(self.dx.dtype).mul_(scale))
        if self.dw is not None:
            self.dw.addcmul_(dw_q, scale)
        if self.db is not None:
            self.db.addcmul_(db_q, scale)

    def result(self):
        grads = (self.dx, self.dw, self.db)
        return tuple(None if g is None else g.to(dt) for g, dt in zip(grads, self.dtypes))


class SequenceGroupLossFunction(torch.autograd.Function):
    """loss_fn(s) with its gradients computed group by group in the forward pass and scaled
    in backward (one backward per forward, as ``WeightedLogprobSumFunction``)."""

    @staticmethod
    def forward(ctx, x, w, b, labels, floor, rows_by_seq, groups, loss_fn, tf, impl, needs):
        dtype = logp_dtype(x)
        sums = torch.zeros(len(rows_by_seq), dtype=dtype, device=x.device)
        seen = sums if floor is None else torch.zeros_like(sums)  # loss_fn's (floored) sums
        seq_grads = torch.zeros_like(sums)
        acc = _GroupGradients(x, w, b, needs, dtype, len(groups[0]))
        for group in groups:
            parts = []
            for q, dw_out in zip(group, acc.buffers):
                rows = rows_by_seq[q]
                if rows.numel() == 0:
                    continue
                ones = torch.ones(rows.numel(), dtype=dtype, device=x.device)
                floor_q = None if floor is None else floor[rows]
                logp, *grads = impl.forward_backward(x[rows], w, b, labels[rows], ones,
                                                     tf, needs, dw_out=dw_out, floor=floor_q)
                sums[q] = logp.sum()
                if floor_q is not None:
                    seen[q] = torch.maximum(logp, floor_q).sum()
                parts.append((q, rows, grads))
            seq_grads[group] = _loss_and_grad(loss_fn, seen)[1][group]
            for q, rows, grads in parts:
                acc.add(rows, grads, seq_grads[q])
        loss, final_grads = _loss_and_grad(loss_fn, seen)
        grouped = [q for group in groups for q in group]
        if not torch.allclose(final_grads[grouped], seq_grads[grouped], rtol=1e-4,
                              atol=1e-6 * float(final_grads.abs().max()) + 1e-30):
            raise ValueError(
                "loss_fn is not a sum of one term per group: the gradient of a sequence's sum "
                "changed once the other groups' sums were filled in")
        ctx.grads = acc.result()
        ctx.mark_non_differentiable(sums)
        return loss.to(dtype), sums

    @staticmethod
    @first_order_only
    def backward(ctx, grad_loss, _grad_sums):
        return (*hand_over_grads(ctx, grad_loss), None, None, None, None, None, None, None,
                None)


def _check_grouping(seq_index, groups, labels):
    if not isinstance(seq_index, torch.Tensor) or seq_index.dtype.is_floating_point or \
            seq_index.dtype == torch.bool or tuple(seq_index.shape) != tuple(labels.shape):
        raise ValueError(f"seq_index must be an integer tensor of labels' shape "
                         f"{tuple(labels.shape)}")
    if not isinstance(groups, torch.Tensor) or groups.dim() != 2 or groups.numel() == 0 or \
            groups.dtype.is_floating_point or groups.dtype == torch.bool:
        raise ValueError("groups must be a non-empty [G, K] integer tensor of sequence ids")
    for name, t in (("seq_index", seq_index), ("groups", groups)):
        if t.device != labels.device:
            raise ValueError(f"{name} must be on labels' device ({labels.device}), got {t.device}")
        if t.numel() and int(t.min()) < 0:
            raise ValueError(f"{name} must hold sequence ids >= 0, got {int(t.min())}")
    if groups.unique().numel() != groups.numel():
        raise ValueError("each sequence may appear in one group, once")


def sequence_group_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                        seq_index: torch.Tensor, groups: torch.Tensor,
                        loss_fn: Callable[[torch.Tensor], torch.Tensor], *,
                        bias: torch.Tensor | None = None, ignore_index: int = -100,
                        temperature: float = 1.0, softcap: float | None = None,
                        backend: str = "auto", logprob_floor: torch.Tensor | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_fn(s)`` of the per-sequence log-prob sums ``s``, gradients in a single pass.

    Args:
        hidden, weight, labels, bias, ignore_index, temperature, softcap, backend: as in
            :func:`token_logprobs`.
        seq_index: integer tensor of labels' shape, the sequence id of each token.
        groups: [G, K] integer tensor, the sequence ids of each group (for pairs, K = 2:
            chosen, rejected). A sequence is in one group at most, and every token with a
            label must belong to a grouped sequence.
        loss_fn: float32 [S] sums -> scalar tensor, S = 1 + the largest sequence id, made of
            one term per group: d loss / d s_q may depend on the sums of q's group only (it is
            checked at the end: ValueError otherwise). Tensors it captures get no gradient.
        logprob_floor: None, or per-token floors f_i of labels' shape (-inf: none; no
            gradient): ``loss_fn`` then gets s_q = sum_{i in q} max(logp_i, f_i), and a token
            under its floor gets no gradient (as ``weighted_logprob_sum``'s).

    Returns:
        ``(loss, sums)``: the loss (float32 scalar, differentiable w.r.t. hidden, weight and
        bias) and the detached float32 [S] sums of logp (0 for a sequence without labelled
        tokens; the log-probs themselves, not floored).
    """
    tf = check_inputs(hidden, weight, labels, bias, ignore_index, temperature, softcap)
    _check_grouping(seq_index, groups, labels)
    floor = None if logprob_floor is None else check_per_token(
        "logprob_floor", logprob_floor, labels, hidden).detach().to(logp_dtype(hidden))
    impl = select_backend(backend, hidden.device, hidden.dtype)
    x, w, safe_labels, valid = flatten_inputs(hidden, weight, labels, ignore_index)
    seqs = seq_index.reshape(-1).long()
    num_seqs = 1 + max(int(seqs.max()) if seqs.numel() else -1, int(groups.max()))
    grouped = torch.zeros(num_seqs, dtype=torch.bool, device=seqs.device)
    grouped[groups.reshape(-1)] = True
    stray = valid & ~grouped[seqs]
    if bool(stray.any()):
        i = int(stray.nonzero()[0])
        raise ValueError(f"token {i} has a label but its sequence ({int(seqs[i])}) is in no "
                         "group")
    rows = valid.nonzero().squeeze(1)
    order = torch.argsort(seqs[rows], stable=True)
    counts = torch.bincount(seqs[rows], minlength=num_seqs).tolist()
    rows_by_seq = list(torch.split(rows[order], counts))
    return SequenceGroupLossFunction.apply(
        x, w, bias, safe_labels, floor, rows_by_seq, groups.tolist(), loss_fn, tf, impl,
        grads_needed(hidden, weight, bias))
