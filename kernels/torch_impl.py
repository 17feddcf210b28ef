"""Chunked PyTorch implementation of the fused linear log-prob op (the CPU backend).

Notation, shared with the Triton backend (``triton_impl.py``)::

    z_iv   = (x_i . W_v) / tau + b_v               logits, [N, V], never held whole
    lse_i  = log sum_v exp(z_iv)
    logp_i = z_{i, y_i} - lse_i

For an upstream gradient g_i on logp_i (g_i = 0 on ignored tokens)::

    dz_iv  = g_i * (1[v = y_i] - exp(z_iv - lse_i))     d logp_i / d z_iv, scaled
    dx     = dz W / tau      dW = dz^T x / tau      db = sum_i dz_i

Each function holds one float32 block of logits at a time: ``forward`` and
``forward_backward`` walk the tokens (a ``[C, V]`` block: they need whole rows for the
log-sum-exp), ``backward`` walks the vocabulary (an ``[N, V_c]`` block: the softmax
normalizer is known, and dW rows are then written once instead of accumulated). The
extra memory is ``O(N*H + V*H)`` (fp32 copies of 16-bit inputs, fp32 gradient buffers)
plus the block, which is ``CHUNK_BYTES`` (64 MiB). The block size trades the matmuls' shape
(thin chunks make ``dW += dz^T x`` re-read the [V, H] accumulator once per chunk) against
the softmax passes' cache locality. On 2 EPYC cores at N=4096, H=512, V=32000 (fp32, two
interleaved runs, median of 5) the single pass took 1.04x / 0.95x the 3-matmul floor with
64 MiB (32 MiB: 1.12x / 0.95x) and the general op 1.40x / 1.38x (32 MiB: 1.50x / 1.32x):
no clear winner between the two; 16 MiB and below were slower (1.27-1.47x single).

The backend computes in float32 (float64 when given float64) whatever the input dtype, and
returns gradients in the dtype of the tensor they belong to.

Inputs are already validated and flattened by ``linear_logprobs.py``: ``x`` [N, H] and ``w``
[V, H] contiguous, ``labels`` [N] int64 in [0, V) (ignored tokens carry label 0 and a zero
gradient or coefficient), ``inv_temp`` = 1 / tau.
"""

from __future__ import annotations

import torch

CHUNK_BYTES = 64 * 2**20


def chunk_rows_for(vocab: int) -> int:
    """Rows per chunk so that one [rows, vocab] float32 block of logits takes CHUNK_BYTES."""
    return max(8, CHUNK_BYTES // (vocab * 4))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _upcast(x, w, b):
    dtype = _compute_dtype(x)
    return x.to(dtype), w.to(dtype), None if b is None else b.to(dtype)


def _chunks(n, rows):
    for start in range(0, n, rows):
        yield start, min(start + rows, n)


def _logits_into(block, x_c, w, b, inv_temp):
    """block[:rows] = x_c W^T / tau + b, written in place into the preallocated block."""
    z = block[: x_c.shape[0]]
    bias = z if b is None else b
    torch.addmm(bias, x_c, w.t(), beta=0 if b is None else 1, alpha=inv_temp, out=z)
    return z


def _exp_shifted_(z):
    """z <- exp(z - max_v z) in place; return (lse, sum_v exp(z - max)) per row."""
    row_max = z.amax(dim=1, keepdim=True)
    row_sum = z.sub_(row_max).exp_().sum(dim=1)
    return row_max.squeeze(1) + row_sum.log(), row_sum


def _add_onehot_(dz, labels_c, g):
    dz.scatter_add_(1, labels_c.unsqueeze(1), g.unsqueeze(1).to(dz.dtype))
    return dz


class _GradAccumulators:
    """Compute-dtype buffers for dx, dW, db, filled chunk by chunk, cast back at the end."""

    def __init__(self, x, w, b, needs, dtype, dw_out=None):
        need_x, need_w, need_b = needs
        self.dtypes = (x.dtype, w.dtype, None if b is None else b.dtype)
        if dw_out is not None:  # dW and db stay in the compute dtype (see forward_backward)
            self.dtypes = (x.dtype, None, None)
        new = dict(dtype=dtype, device=x.device)
        self.dx = torch.empty(x.shape, **new) if need_x else None
        self.dw = (torch.zeros(w.shape, **new) if dw_out is None else dw_out.zero_()) \
            if need_w else None
        self.db = torch.zeros(w.shape[0], **new) if (need_b and b is not None) else None

    def add_chunk(self, start, stop, dz, x_c, w, inv_temp):
        if self.dx is not None:
            dx_c = self.dx[start:stop]
            torch.addmm(dx_c, dz, w, beta=0, alpha=inv_temp, out=dx_c)
        if self.dw is not None:
            self.dw.addmm_(dz.t(), x_c, alpha=inv_temp)
        if self.db is not None:
            self.db.add_(dz.sum(0))

    def result(self):
        grads = (self.dx, self.dw, self.db)
        return tuple(g if g is None or dt is None else g.to(dt)
                     for g, dt in zip(grads, self.dtypes))


def forward(x, w, b, labels, inv_temp):
    """Return (logp, lse), both [N] in the compute dtype, for every token (ignored included)."""
    n = x.shape[0]
    x, w, b = _upcast(x, w, b)
    rows = min(n, chunk_rows_for(w.shape[0]))
    block = x.new_empty(rows, w.shape[0])
    logp = torch.empty(n, dtype=x.dtype, device=x.device)
    lse = torch.empty_like(logp)
    for start, stop in _chunks(n, rows):
        z = _logits_into(block, x[start:stop], w, b, inv_temp)
        target = z.gather(1, labels[start:stop].unsqueeze(1)).squeeze(1)
        chunk_lse, _ = _exp_shifted_(z)
        lse[start:stop] = chunk_lse
        logp[start:stop] = target - chunk_lse
    return logp, lse


def backward(x, w, b, labels, lse, grad, inv_temp, needs):
    """Gradients (dx, dW, db) of sum_i grad_i * logp_i, recomputing the logits.

    Walks the vocabulary in column chunks of a [N, V_c] block: each chunk's rows of dW are
    written once and only the [N, H] dx accumulates. Walking the tokens instead would
    accumulate the [V, H] dW once per chunk: V / N times the memory traffic.
    """
    n, v = x.shape[0], w.shape[0]
    need_x, need_w, need_b = needs
    dtypes = (x.dtype, w.dtype, None if b is None else b.dtype)
    x, w, b = _upcast(x, w, b)
    cols = min(v, max(64, CHUNK_BYTES // (n * x.element_size())))
    storage = x.new_empty(n * cols)
    grad, lse = grad.to(x.dtype), lse.to(x.dtype).unsqueeze(1)
    neg_grad = grad.neg().unsqueeze(1)
    dx = torch.zeros_like(x) if need_x else None
    dw = torch.empty_like(w) if need_w else None
    db = torch.empty_like(b) if (need_b and b is not None) else None
    for v0, v1 in _chunks(v, cols):
        w_c, b_c = w[v0:v1], None if b is None else b[v0:v1]
        z = storage[: n * (v1 - v0)].view(n, v1 - v0)
        torch.addmm(z if b_c is None else b_c, x, w_c.t(), beta=0 if b_c is None else 1,
                    alpha=inv_temp, out=z)
        dz = z.sub_(lse).exp_().mul_(neg_grad)
        rows = ((labels >= v0) & (labels < v1)).nonzero().squeeze(1)
        dz.index_put_((rows, labels[rows] - v0), grad[rows], accumulate=True)
        if dx is not None:
            dx.addmm_(dz, w_c, alpha=inv_temp)
        if dw is not None:
            torch.addmm(dw[v0:v1], dz.t(), x, beta=0, alpha=inv_temp, out=dw[v0:v1])
        if db is not None:
            db[v0:v1] = dz.sum(0)
    grads = (dx, dw, db)
    return tuple(None if g is None else g.to(dt) for g, dt in zip(grads, dtypes))


def forward_backward(x, w, b, labels, coef, inv_temp, needs, dw_out=None):
    """Single pass for a loss linear in logp: return (logp, dx, dW, db) of sum_i coef_i * logp_i.

    Each chunk's logits are computed once and turned into dz in place, so the value and all
    gradients cost the three matmuls (logits, dz W, dz^T x) and five passes over the block.
    ``dw_out``, a compute-dtype [V, H] buffer, receives dW (overwritten); dW and db are then
    returned uncast, for a caller that combines the gradients of several passes.
    """
    n = x.shape[0]
    acc = _GradAccumulators(x, w, b, needs, _compute_dtype(x), dw_out)
    x, w, b = _upcast(x, w, b)
    rows = min(n, chunk_rows_for(w.shape[0]))
    block = x.new_empty(rows, w.shape[0])
    coef = coef.to(x.dtype)
    logp = torch.empty(n, dtype=x.dtype, device=x.device)
    for start, stop in _chunks(n, rows):
        x_c, y_c, g = x[start:stop], labels[start:stop], coef[start:stop]
        z = _logits_into(block, x_c, w, b, inv_temp)
        target = z.gather(1, y_c.unsqueeze(1)).squeeze(1)
        lse, row_sum = _exp_shifted_(z)  # z now holds softmax(z) * row_sum
        logp[start:stop] = target - lse
        if any(needs):
            dz = z.mul_((-g / row_sum).unsqueeze(1))
            acc.add_chunk(start, stop, _add_onehot_(dz, y_c, g), x_c, w, inv_temp)
    return (logp, *acc.result())
