"""Triton implementation of the fused linear log-prob op (the GPU backend).

Same notation and contract as ``torch_impl.py``::

    s_iv   = x_i . W_v + b_v,   z_iv = c tanh(s_iv / c) / tau   (s_iv / tau without softcap)
    lse_i  = log sum_v exp(z_iv),         logp_i = z_{i, y_i} - lse_i
    dz_iv  = g_i * (1[v = y_i] - exp(z_iv - lse_i))
    ds_iv  = dz_iv (1 - tanh^2(s_iv / c)) / tau
    dx = ds W,   dW = ds^T x,   db = sum_i ds_i

The softcap is a constexpr switch (``HAS_SOFTCAP``, off by default): without it the kernels
compile to what they were before it existed (one multiply by 1/tau per logit).

Two kernels do the vocabulary-sized work; the two gradient matmuls go to cuBLAS:

* ``_logits_lse_kernel``: grid (token blocks, vocabulary splits). Each program computes
  [BLOCK_N, BLOCK_V] tiles of logits with ``tl.dot`` (fp32 accumulation over H), keeps an
  online (max, sum-exp) per row across its split and picks out the target logit. Splitting
  the vocabulary keeps every SM busy when N is small; the host merges the per-split partials.
  With ``STORE_LOGITS`` it also writes the tiles into a chunk buffer (single pass): z, or
  with a softcap the raw s.
* ``_dlogits_kernel``: grid (token blocks, vocabulary tiles). Each program gets one tile of
  logits, either recomputed with ``tl.dot`` (``RECOMPUTE``, general backward) or read from
  the chunk buffer (single pass), and overwrites it with tau ds in the input dtype (for fp16,
  scaled by a power of two 2^k that the GEMMs undo; see ``_fp16_scale``; the host folds
  1/tau into g).

Memory: the general op's forward keeps only lse (fp32 [N]); its backward walks the
vocabulary in column chunks (an [N, V_c] dz buffer, whole dW rows per chunk, an fp32 [N, H]
dx accumulator). The single pass walks the tokens in row chunks (a [C, V] buffer, an fp32
[V, H] dW accumulator). Either buffer is at most ``CHUNK_BYTES`` (512 MiB), never [N, V].
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
CHUNK_BYTES = 512 * 2**20
MIN_SPLIT_COLS = 1024  # vocabulary columns one forward program covers at the least


# The interpreter runs one config; small tiles keep it quick and still cover every edge.
_INTERPRET_BLOCKS = {"BLOCK_N": 16, "BLOCK_V": 32, "BLOCK_H": 16}
# Elementwise pass over stored logits: fixed tiles (it rewrites its input, so no autotuning).
_ELEMENTWISE_BLOCKS = _INTERPRET_BLOCKS if INTERPRET else {
    "BLOCK_N": 32, "BLOCK_V": 256, "BLOCK_H": 16, "num_warps": 8}


def _gemm_configs():
    if INTERPRET:
        return [triton.Config(_INTERPRET_BLOCKS)]
    return [
        triton.Config({"BLOCK_N": 128, "BLOCK_V": 128, "BLOCK_H": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_N": 128, "BLOCK_V": 256, "BLOCK_H": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_N": 64, "BLOCK_V": 128, "BLOCK_H": 64}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_N": 128, "BLOCK_V": 128, "BLOCK_H": 32}, num_warps=4, num_stages=4),
    ]


@triton.jit
def _tanh_by_sigmoid(u):
    """tanh(u) = 2 sigmoid(2u) - 1, for the interpreter, whose libdevice has no tanh."""
    return 2.0 * tl.sigmoid(2.0 * u) - 1.0


_tanh = _tanh_by_sigmoid if INTERPRET else libdevice.tanh


@triton.jit
def _transform(s, inv_temp, softcap, HAS_SOFTCAP: tl.constexpr):
    """(z, t): the logits z = c tanh(s / c) / tau of raw outputs s, and t = tanh(s / c).
    Without a softcap z = s / tau, and t is s itself, unused (both branches must return
    the same types; the compiler drops it)."""
    # (the chunk buffer of the single pass holds z without a softcap: see _logits_lse_kernel)
    if HAS_SOFTCAP:
        t = _tanh(s / softcap)
        return t * (softcap * inv_temp), t
    return s * inv_temp, s


@triton.jit
def _from_stored(u, inv_temp, softcap, HAS_SOFTCAP: tl.constexpr):
    """(z, t) of a chunk-buffer value u, which is s with a softcap and z itself without."""
    if HAS_SOFTCAP:
        return _transform(u, inv_temp, softcap, HAS_SOFTCAP)
    return u, u


@triton.jit
def _logits_tile(x_ptr, w_ptr, b_ptr, rows, cols, row_mask, col_mask, H, stride_x, stride_w,
                 HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr):
    """fp32 [BLOCK_N, BLOCK_V] tile of the raw head output s = x W^T + b."""
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_x
    w_cols = w_ptr + cols.to(tl.int64)[None, :] * stride_w
    for h0 in range(0, H, BLOCK_H):
        hs = h0 + tl.arange(0, BLOCK_H)
        h_mask = hs < H
        a = tl.load(x_rows + hs[None, :], mask=row_mask[:, None] & h_mask[None, :], other=0.0)
        w_t = tl.load(w_cols + hs[:, None], mask=h_mask[:, None] & col_mask[None, :], other=0.0)
        acc = tl.dot(a, w_t, acc, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _logits_lse_kernel(x_ptr, w_ptr, b_ptr, labels_ptr, max_ptr, sum_ptr, sum_exact_ptr,
                       target_ptr, z_ptr, N, V, H, stride_x, stride_w, stride_z,
                       cols_per_split, num_splits, inv_temp, softcap, HAS_BIAS: tl.constexpr,
                       DOT_PRECISION: tl.constexpr, STORE_LOGITS: tl.constexpr,
                       ROUNDED: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
                       HAS_SOFTCAP: tl.constexpr = False):
    """Per (row, split): m = max_v z, e = sum_v exp(z - m), t = z[label] if label in split.

    The host merges splits: lse = M + log sum_s e_s exp(m_s - M), M = max_s m_s.

    With STORE_LOGITS the tiles are also written to the chunk buffer: the logits z, or with
    a softcap the raw outputs s (a rounded z near the cap would leave the slope 1 - tanh^2
    no correct digit; from s it keeps its relative precision). When that buffer is 16-bit
    (ROUNDED), the gradient must normalize the logits of the values it will read back,
    z~ = round(z) or f(round(s)) (f the softcap and temperature), or its softmax would not
    sum to one (a 5x larger dx error than naive 16-bit, measured). So (m, e) are taken over
    z~, and the exact sum for the returned logp comes from the same exponentials:
    exp(z - m) = exp(z~ - m) exp(d), d = z - z~, with exp(d) ~ 1 + d + d^2/2 (|d| <= 2^-9 |z|
    in bf16, as |f'(s)| <= 1/tau: truncation error <= |d|^3 / 6).
    """
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    labels = tl.load(labels_ptr + rows, mask=row_mask, other=-1)
    run_max = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    run_sum_exact = tl.zeros((BLOCK_N,), dtype=tl.float32)
    target = tl.zeros((BLOCK_N,), dtype=tl.float32)
    v_begin = pid_s * cols_per_split
    v_end = tl.minimum(v_begin + cols_per_split, V)
    for v0 in range(v_begin, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_mask = cols < v_end
        s = _logits_tile(x_ptr, w_ptr, b_ptr, rows, cols, row_mask, col_mask, H, stride_x,
                         stride_w, HAS_BIAS, DOT_PRECISION, BLOCK_N, BLOCK_V, BLOCK_H)
        z, _ = _transform(s, inv_temp, softcap, HAS_SOFTCAP)
        target += tl.sum(tl.where(cols[None, :] == labels[:, None], z, 0.0), axis=1)
        if STORE_LOGITS:
            if HAS_SOFTCAP:
                u = s.to(z_ptr.dtype.element_ty)
            else:
                u = z.to(z_ptr.dtype.element_ty)
            z_out = z_ptr + rows.to(tl.int64)[:, None] * stride_z + cols[None, :]
            tl.store(z_out, u, mask=row_mask[:, None] & col_mask[None, :])
            if ROUNDED:
                z_read, _ = _from_stored(u.to(tl.float32), inv_temp, softcap, HAS_SOFTCAP)
                d = tl.where(col_mask[None, :], z - z_read, 0.0)
                z = z_read
        z = tl.where(col_mask[None, :], z, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(z, axis=1))
        rescale = tl.exp(run_max - new_max)
        e = tl.exp(z - new_max[:, None])
        run_sum = run_sum * rescale + tl.sum(e, axis=1)
        if ROUNDED:
            run_sum_exact = run_sum_exact * rescale + tl.sum(e * (1.0 + d * (1.0 + 0.5 * d)), 1)
        run_max = new_max
    out = rows * num_splits + pid_s
    tl.store(max_ptr + out, run_max, mask=row_mask)
    tl.store(sum_ptr + out, run_sum, mask=row_mask)
    tl.store(target_ptr + out, target, mask=row_mask)
    if ROUNDED:
        tl.store(sum_exact_ptr + out, run_sum_exact, mask=row_mask)


@triton.jit
def _dlogits_kernel(x_ptr, w_ptr, b_ptr, labels_ptr, lse_ptr, g_ptr, z_ptr,
                    N, V, H, stride_x, stride_w, stride_z, label_offset, inv_temp, softcap,
                    HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr,
                    RECOMPUTE: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
                    HAS_SOFTCAP: tl.constexpr = False):
    """z_tile <- g_i * (1[v = y_i] - exp(z_iv - lse_i)) (1 - t_iv^2) for one
    [BLOCK_N, BLOCK_V] tile, t = tanh(s / c) (no last factor without a softcap); g carries
    the 1/tau of the chain rule.

    ``w_ptr``/``b_ptr``/``z_ptr`` point at the first column of the current vocabulary chunk;
    ``label_offset`` is that column's index in the full vocabulary.
    """
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_mask = rows < N
    col_mask = cols < V
    mask = row_mask[:, None] & col_mask[None, :]
    z_tile = z_ptr + rows.to(tl.int64)[:, None] * stride_z + cols[None, :]
    if RECOMPUTE:
        s = _logits_tile(x_ptr, w_ptr, b_ptr, rows, cols, row_mask, col_mask, H, stride_x,
                         stride_w, HAS_BIAS, DOT_PRECISION, BLOCK_N, BLOCK_V, BLOCK_H)
        z, t = _transform(s, inv_temp, softcap, HAS_SOFTCAP)
    else:
        u = tl.load(z_tile, mask=mask, other=0.0).to(tl.float32)
        z, t = _from_stored(u, inv_temp, softcap, HAS_SOFTCAP)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    g = tl.load(g_ptr + rows, mask=row_mask, other=0.0)
    labels = tl.load(labels_ptr + rows, mask=row_mask, other=-1) - label_offset
    onehot = tl.where(cols[None, :] == labels[:, None], 1.0, 0.0)
    dz = g[:, None] * (onehot - tl.exp(z - lse[:, None]))
    if HAS_SOFTCAP:
        dz *= 1.0 - t * t
    tl.store(z_tile, dz.to(z_ptr.dtype.element_ty), mask=mask)


# Both autotuned launches only write outputs that are pure functions of their inputs, so
# re-running them while tuning is harmless.
_logits_lse = triton.autotune(
    _gemm_configs(), key=["V", "H", "DOT_PRECISION", "STORE_LOGITS", "ROUNDED", "HAS_SOFTCAP"])(
    _logits_lse_kernel)
# Not keyed on V: backward passes a vocabulary chunk whose width follows the token count,
# which changes every step; the best tile depends on H and the precision only.
_dlogits_recompute = triton.autotune(_gemm_configs(), key=["H", "DOT_PRECISION",
                                                            "HAS_SOFTCAP"])(
    _dlogits_kernel)


def _dot_precision(x):
    """fp32 inputs get IEEE products unless the user allowed TF32 for matmuls, as in torch."""
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)  # torch >= 2.9; else the legacy flag
    tf32 = precision == "tf32" if precision is not None else matmul.allow_tf32
    return "ieee" if x.dtype == torch.float32 and not tf32 else "tf32"


def _num_splits(n_rows: int, vocab: int, device: torch.device) -> tuple[int, int]:
    """(splits, columns per split): enough splits that (token blocks x splits) fills the
    device twice over, each split a whole number of the widest vocabulary tile."""
    sms = 4 if INTERPRET else torch.cuda.get_device_properties(device).multi_processor_count
    row_blocks = triton.cdiv(n_rows, 128)
    splits = max(1, min(triton.cdiv(2 * sms, row_blocks), triton.cdiv(vocab, MIN_SPLIT_COLS)))
    align = max(c.kwargs["BLOCK_V"] for c in _gemm_configs())
    cols = triton.cdiv(triton.cdiv(vocab, splits), align) * align
    return triton.cdiv(vocab, cols), cols


def _merge_splits(part_max, part_sum):
    row_max = part_max.amax(dim=1, keepdim=True)
    return row_max.squeeze(1) + (part_sum * torch.exp(part_max - row_max)).sum(1).log()


def _transform_args(tf) -> dict:
    """The kernels' logit-transform arguments; the softcap switch only when it is on, so the
    default launch is exactly the kernel without one."""
    if tf.softcap is None:
        return {"inv_temp": tf.inv_temp, "softcap": 1.0}
    return {"inv_temp": tf.inv_temp, "softcap": tf.softcap, "HAS_SOFTCAP": True}


def _lse_and_target(x, w, b, labels, tf, z_buffer=None):
    """Run the forward kernel on all rows of x; return fp32 [N] (lse, target logit, lse of
    the stored logits). With ``z_buffer`` the raw outputs s are also written there."""
    n, h = x.shape
    v = w.shape[0]
    splits, cols = _num_splits(n, v, x.device)
    part_max, part_sum, part_sum_exact, part_target = torch.empty(
        4, n, splits, dtype=torch.float32, device=x.device).unbind(0)
    store = z_buffer is not None
    rounded = store and z_buffer.dtype != torch.float32
    z = z_buffer if store else part_max  # an unused pointer when not storing
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), splits)  # noqa: E731
    _logits_lse[grid](
        x, w, b if b is not None else x, labels, part_max, part_sum, part_sum_exact,
        part_target, z, n, v, h, x.stride(0), w.stride(0), z.stride(0) if store else 0, cols,
        splits, HAS_BIAS=b is not None, DOT_PRECISION=_dot_precision(x),
        STORE_LOGITS=store, ROUNDED=rounded, **_transform_args(tf))
    lse_stored = _merge_splits(part_max, part_sum)
    lse = _merge_splits(part_max, part_sum_exact) if rounded else lse_stored
    return lse, part_target.sum(1), lse_stored


def _launch_dlogits(x, w, b, labels, lse, g, z, label_offset, tf, recompute):
    """z <- tau ds for every tile of z; s recomputed from x, w (or read from z itself)."""
    n, v = z.shape
    kernel, meta = (_dlogits_recompute, {}) if recompute else (_dlogits_kernel,
                                                               _ELEMENTWISE_BLOCKS)
    grid = lambda m: (triton.cdiv(n, m["BLOCK_N"]), triton.cdiv(v, m["BLOCK_V"]))  # noqa: E731
    kernel[grid](x, w, b if b is not None else x, labels, lse, g, z, n, v, x.shape[1],
                 x.stride(0), w.stride(0), z.stride(0), label_offset,
                 HAS_BIAS=b is not None, DOT_PRECISION=_dot_precision(x), RECOMPUTE=recompute,
                 **_transform_args(tf), **meta)


def _fp16_scale(g, dtype) -> float:
    """The power of two 2^k that puts max|g| in (512, 1024] when dz is stored as fp16, else 1.

    dz_iv = g_i (1[v = y_i] - p_iv) is stored in the input dtype. fp16's smallest normal
    number is 6.1e-5: with an SFT-sized g (1/num_tokens, ~1e-4) and p ~ 1/V, every
    non-target entry is subnormal or zero, and the gradients lose most of their digits
    (bf16 has fp32's exponent range and needs nothing). Scaling g by 2^k is exact; the GEMMs
    take alpha = 2^-k in their fp32 epilogue, and the largest |dz| stays far below 65504.
    """
    if dtype != torch.float16:
        return 1.0
    top = g.abs().max().item() if g.numel() else 0.0
    if not math.isfinite(top) or top == 0.0:
        return 1.0
    return 2.0 ** (10 - math.ceil(math.log2(top)))


def _accumulate_mm(acc, a, b, alpha=1.0):
    """acc += alpha a @ b with fp32 accumulation across calls: a 16-bit partial product
    rounded before each add would make the sum over chunks worse than one 16-bit GEMM."""
    if acc.dtype == a.dtype:
        acc.addmm_(a, b, alpha=alpha)
    elif a.is_cuda:  # cuBLAS: 16-bit inputs, fp32 C read and written in place
        torch.addmm(acc, a, b, acc.dtype, alpha=alpha, out=acc)
    else:  # the Triton interpreter on CPU: no mixed-dtype GEMM there
        acc.addmm_(a.to(acc.dtype), b.to(acc.dtype), alpha=alpha)


def forward(x, w, b, labels, tf):
    """Return (logp, lse), both float32 [N]."""
    lse, target, _ = _lse_and_target(x, w, b, labels, tf)
    return target - lse, lse


def backward(x, w, b, labels, lse, grad, tf, needs):
    """Gradients (dx, dW, db) of sum_i grad_i * logp_i, walking the vocabulary in chunks."""
    need_x, need_w, need_b = needs
    n, v = x.shape[0], w.shape[0]
    cols = min(v, max(64, CHUNK_BYTES // (n * x.element_size()) // 64 * 64))
    g = (grad * tf.inv_temp).float()  # fold 1/tau into dz: dz is ds, dx = dz W, dW = dz^T x
    scale = _fp16_scale(g, x.dtype)
    g.mul_(scale)
    z = torch.empty(n, cols, dtype=x.dtype, device=x.device)
    dx = torch.zeros(x.shape, dtype=torch.float32, device=x.device) if need_x else None
    dw = torch.empty_like(w) if need_w else None
    db = torch.empty_like(b) if (need_b and b is not None) else None
    for v0 in range(0, v, cols):
        v1 = min(v0 + cols, v)
        dz = z[:, : v1 - v0]
        b_c = None if b is None else b[v0:v1]
        _launch_dlogits(x, w[v0:v1], b_c, labels, lse, g, dz, v0, tf, recompute=True)
        if dx is not None:
            _accumulate_mm(dx, dz, w[v0:v1], alpha=1 / scale)
        if dw is not None:
            torch.addmm(dw[v0:v1], dz.t(), x, beta=0, alpha=1 / scale, out=dw[v0:v1])
        if db is not None:
            db[v0:v1] = dz.sum(0, dtype=torch.float32) / scale
    return (None if dx is None else dx.to(x.dtype)), dw, db


def forward_backward(x, w, b, labels, coef, tf, needs, dw_out=None, floor=None):
    """Single pass: (logp, dx, dW, db) of sum_i coef_i * logp_i, logits computed once.

    Per chunk of rows: the forward kernel writes the tiles into the chunk buffer while it
    finds lse; the dlogits kernel turns them into dz in place; cuBLAS does dz W and dz^T x.
    ``dw_out``, a float32 [V, H] buffer, receives dW (overwritten); dW and db are then
    returned in float32, uncast, for a caller that combines several passes' gradients.

    ``floor``, [N] or None: per-token lower bounds f_i, for the gradients of
    sum_i coef_i max(logp_i, f_i) (as ``torch_impl.forward_backward``). Between the two
    kernels of a chunk, once logp_i = target_i - lse_i is known, the chunk's g becomes
    g_i 1[logp_i >= f_i]: a [rows] select, against the [rows, V] kernels around it, and no
    new kernel variant. The returned logp are not floored.
    """
    need_x, need_w, need_b = needs
    n, v = x.shape[0], w.shape[0]
    rows = min(n, max(16, CHUNK_BYTES // (v * x.element_size()) // 16 * 16))
    g = (coef * tf.inv_temp).float()
    scale = _fp16_scale(g, x.dtype)
    g.mul_(scale)
    z = torch.empty(rows, v, dtype=x.dtype, device=x.device)
    logp = torch.empty(n, dtype=torch.float32, device=x.device)
    floor = None if floor is None else floor.float()
    fp32 = dict(dtype=torch.float32, device=x.device)
    dx = torch.empty_like(x) if need_x else None
    dw = (torch.zeros(w.shape, **fp32) if dw_out is None else dw_out.zero_()) \
        if need_w else None
    db = torch.zeros(v, **fp32) if (need_b and b is not None) else None
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        x_c, y_c, dz = x[r0:r1], labels[r0:r1], z[: r1 - r0]
        lse, target, lse_stored = _lse_and_target(x_c, w, b, y_c, tf,
                                                  z_buffer=dz if any(needs) else None)
        logp[r0:r1] = target - lse
        if any(needs):
            g_c = g[r0:r1] if floor is None else \
                torch.where(logp[r0:r1] >= floor[r0:r1], g[r0:r1], 0.0)
            _launch_dlogits(x_c, w, b, y_c, lse_stored, g_c, dz, 0, tf, recompute=False)
        if dx is not None:
            torch.addmm(dx[r0:r1], dz, w, beta=0, alpha=1 / scale, out=dx[r0:r1])
        if dw is not None:
            _accumulate_mm(dw, dz.t(), x_c, alpha=1 / scale)
        if db is not None:
            db.add_(dz.sum(0, dtype=torch.float32))
    if db is not None:
        db = db.div_(scale)
    if dw_out is None:
        db = None if db is None else db.to(b.dtype)
        dw = None if dw is None else dw.to(w.dtype)
    return logp, dx, dw, db
