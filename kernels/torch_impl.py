"""Chunked PyTorch implementation of the fused linear log-prob op (the CPU backend).

Notation, shared with the Triton backend (``triton_impl.py``); the logit transform (softcap
c, temperature tau) is ``logit_transform.py``'s::

    s_iv   = x_i . W_v + b_v                        raw head output
    z_iv   = c tanh(s_iv / c) / tau   (s_iv / tau without a softcap)
                                                    logits, [N, V], never held whole
    lse_i  = log sum_v exp(z_iv)
    logp_i = z_{i, y_i} - lse_i

For an upstream gradient g_i on logp_i (g_i = 0 on ignored tokens)::

    dz_iv  = g_i * (1[v = y_i] - exp(z_iv - lse_i))     d logp_i / d z_iv, scaled
    ds_iv  = dz_iv * k_iv / tau,   k_iv = 1 - tanh^2(s_iv / c)   (k = 1 without a softcap)
    dx     = ds W      dW = ds^T x      db = sum_i ds_i

Each function holds one float32 block of logits at a time: ``forward`` and
``forward_backward`` walk the tokens (a ``[C, V]`` block: they need whole rows for the
log-sum-exp), ``backward`` walks the vocabulary (an ``[N, V_c]`` block: the softmax
normalizer is known, and dW rows are then written once instead of accumulated). The
extra memory is ``O(N*H + V*H)`` (fp32 copies of 16-bit inputs, fp32 gradient buffers)
plus the block, which is ``CHUNK_BYTES`` (64 MiB; for gradients through a softcap, two
half-size blocks: the logits and the slope k). The block size trades the matmuls' shape
(thin chunks make ``dW += dz^T x`` re-read the [V, H] accumulator once per chunk) against
the softmax passes' cache locality; 64 MiB was chosen by timing block sizes against the
3-matmul floor on CPU (the figures: ``bench/results/cpu-2026-11-26/README.md``).

The backend computes in float32 (float64 when given float64) whatever the input dtype, and
returns gradients in the dtype of the tensor they belong to.

Inputs are already validated and flattened by ``linear_logprobs.py``: ``x`` [N, H] and ``w``
[V, H] contiguous, ``labels`` [N] int64 in [0, V) (ignored tokens carry label 0 and a zero
gradient or coefficient), ``tf`` a ``LogitTransform`` (softcap and temperature).
"""

from __future__ import annotations

import torch

CHUNK_BYTES = 64 * 2**20


def _blocks(tf, gradients: bool = True) -> int:
    """Blocks held per chunk: the logits, and for gradients through a softcap its slope k."""
    return 2 if gradients and tf.softcap is not None else 1


def chunk_rows_for(vocab: int, blocks: int = 1) -> int:
    """Rows per chunk so that ``blocks`` [rows, vocab] float32 blocks take CHUNK_BYTES."""
    return max(8, CHUNK_BYTES // (vocab * 4 * blocks))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _upcast(x, w, b):
    dtype = _compute_dtype(x)
    return x.to(dtype), w.to(dtype), None if b is None else b.to(dtype)


def _chunks(n, rows):
    for start in range(0, n, rows):
        yield start, min(start + rows, n)


def _logits_into(z, x_c, w, b, tf, slope=None):
    """z <- the logits of x_c (in place, [rows, V_c]). With a softcap and a ``slope`` buffer
    (same shape), also slope <- k = 1 - tanh^2(s / c). Returns (z, slope or None)."""
    scale = tf.inv_temp if tf.softcap is None else 1.0 / tf.softcap
    t = z if tf.softcap is None or slope is None else slope
    torch.addmm(z if b is None else b, x_c, w.t(), beta=0 if b is None else scale,
                alpha=scale, out=t)
    if tf.softcap is None:
        return z, None
    torch.mul(t.tanh_(), tf.softcap * tf.inv_temp, out=z)
    if slope is None:
        return z, None
    return z, torch.addcmul(slope.new_ones(()), slope, slope, value=-1.0, out=slope)


def _exp_shifted_(z):
    """z <- exp(z - max_v z) in place; return (lse, sum_v exp(z - max)) per row."""
    row_max = z.amax(dim=1, keepdim=True)
    row_sum = z.sub_(row_max).exp_().sum(dim=1)
    return row_max.squeeze(1) + row_sum.log(), row_sum


def _finish_dlogits_(dz, labels_c, g, slope):
    """dz <- dz * k + g 1[v = y] (k = slope, or 1): dz holds -g p on entry. The result is
    tau ds, the gradient on the raw head output up to the 1/tau the matmuls apply."""
    onehot = g.unsqueeze(1).to(dz.dtype)
    if slope is not None:
        dz.mul_(slope)
        onehot = onehot * slope.gather(1, labels_c.unsqueeze(1))
    return dz.scatter_add_(1, labels_c.unsqueeze(1), onehot)


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
            self.db.add_(dz.sum(0), alpha=inv_temp)

    def result(self):
        grads = (self.dx, self.dw, self.db)
        return tuple(g if g is None or dt is None else g.to(dt)
                     for g, dt in zip(grads, self.dtypes))


def forward(x, w, b, labels, tf):
    """Return (logp, lse), both [N] in the compute dtype, for every token (ignored included)."""
    n = x.shape[0]
    x, w, b = _upcast(x, w, b)
    rows = min(n, chunk_rows_for(w.shape[0]))
    block = x.new_empty(rows, w.shape[0])
    logp = torch.empty(n, dtype=x.dtype, device=x.device)
    lse = torch.empty_like(logp)
    for start, stop in _chunks(n, rows):
        z, _ = _logits_into(block[: stop - start], x[start:stop], w, b, tf)
        target = z.gather(1, labels[start:stop].unsqueeze(1)).squeeze(1)
        chunk_lse, _ = _exp_shifted_(z)
        lse[start:stop] = chunk_lse
        logp[start:stop] = target - chunk_lse
    return logp, lse


def backward(x, w, b, labels, lse, grad, tf, needs):
    """Gradients (dx, dW, db) of sum_i grad_i * logp_i, recomputing the logits.

    Walks the vocabulary in column chunks of a [N, V_c] block: each chunk's rows of dW are
    written once and only the [N, H] dx accumulates. Walking the tokens instead would
    accumulate the [V, H] dW once per chunk: V / N times the memory traffic.
    """
    n, v = x.shape[0], w.shape[0]
    need_x, need_w, need_b = needs
    dtypes = (x.dtype, w.dtype, None if b is None else b.dtype)
    x, w, b = _upcast(x, w, b)
    cols = min(v, max(64, CHUNK_BYTES // (n * x.element_size() * _blocks(tf))))
    storage = x.new_empty(_blocks(tf), n * cols)
    grad, lse = grad.to(x.dtype), lse.to(x.dtype).unsqueeze(1)
    neg_grad = grad.neg().unsqueeze(1)
    dx = torch.zeros_like(x) if need_x else None
    dw = torch.empty_like(w) if need_w else None
    db = torch.empty_like(b) if (need_b and b is not None) else None
    for v0, v1 in _chunks(v, cols):
        w_c, b_c = w[v0:v1], None if b is None else b[v0:v1]
        z, slope = (t[: n * (v1 - v0)].view(n, v1 - v0) for t in (storage[0], storage[-1]))
        z, slope = _logits_into(z, x, w_c, b_c, tf, slope if _blocks(tf) == 2 else None)
        dz = z.sub_(lse).exp_().mul_(neg_grad)
        rows = ((labels >= v0) & (labels < v1)).nonzero().squeeze(1)
        cols_y = labels[rows] - v0
        onehot = grad[rows] if slope is None else grad[rows] * slope[rows, cols_y]
        if slope is not None:
            dz.mul_(slope)
        dz.index_put_((rows, cols_y), onehot, accumulate=True)
        if dx is not None:
            dx.addmm_(dz, w_c, alpha=tf.inv_temp)
        if dw is not None:
            torch.addmm(dw[v0:v1], dz.t(), x, beta=0, alpha=tf.inv_temp, out=dw[v0:v1])
        if db is not None:
            db[v0:v1] = dz.sum(0).mul_(tf.inv_temp)
    grads = (dx, dw, db)
    return tuple(None if g is None else g.to(dt) for g, dt in zip(grads, dtypes))


def forward_backward(x, w, b, labels, coef, tf, needs, dw_out=None, floor=None):
    """Single pass for a loss linear in logp: return (logp, dx, dW, db) of sum_i coef_i * logp_i.

    Each chunk's logits are computed once and turned into dz in place, so the value and all
    gradients cost the three matmuls (logits, dz W, dz^T x) and five passes over the block.
    ``dw_out``, a compute-dtype [V, H] buffer, receives dW (overwritten); dW and db are then
    returned uncast, for a caller that combines the gradients of several passes.

    ``floor``, [N] or None: per-token lower bounds f_i, for the gradients of
    sum_i coef_i max(logp_i, f_i). A token's coefficient becomes coef_i 1[logp_i >= f_i],
    decided per chunk once its logp_i is known, before its dz is formed (the logits are
    still computed once). The returned logp are the log-probs themselves, not floored.
    """
    n = x.shape[0]
    acc = _GradAccumulators(x, w, b, needs, _compute_dtype(x), dw_out)
    x, w, b = _upcast(x, w, b)
    blocks = _blocks(tf, any(needs))
    rows = min(n, chunk_rows_for(w.shape[0], blocks))
    block = x.new_empty(blocks, rows, w.shape[0])
    coef = coef.to(x.dtype)
    floor = None if floor is None else floor.to(x.dtype)
    logp = torch.empty(n, dtype=x.dtype, device=x.device)
    for start, stop in _chunks(n, rows):
        x_c, y_c, g = x[start:stop], labels[start:stop], coef[start:stop]
        z, slope = _logits_into(block[0, : stop - start], x_c, w, b, tf,
                                block[1, : stop - start] if blocks == 2 else None)
        target = z.gather(1, y_c.unsqueeze(1)).squeeze(1)
        lse, row_sum = _exp_shifted_(z)  # z now holds softmax(z) * row_sum
        logp[start:stop] = target - lse
        if any(needs):
            if floor is not None:
                g = torch.where(logp[start:stop] >= floor[start:stop], g, 0.0)
            dz = _finish_dlogits_(z.mul_((-g / row_sum).unsqueeze(1)), y_c, g, slope)
            acc.add_chunk(start, stop, dz, x_c, w, tf.inv_temp)
    return (logp, *acc.result())
