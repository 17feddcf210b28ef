"""Triton implementation of the fused linear log-prob op (the GPU backend).

Same notation and contract as ``torch_impl.py``::

    z_iv   = (x_i . W_v) / tau + b_v
    lse_i  = log sum_v exp(z_iv),         logp_i = z_{i, y_i} - lse_i
    dz_iv  = g_i * (1[v = y_i] - exp(z_iv - lse_i))
    dx = dz W / tau,   dW = dz^T x / tau,   db = sum_i dz_i

Two kernels do the vocabulary-sized work; the two gradient matmuls go to cuBLAS:

* ``_logits_lse_kernel``: grid (token blocks, vocabulary splits). Each program computes
  [BLOCK_N, BLOCK_V] tiles of logits with ``tl.dot`` (fp32 accumulation over H), keeps an
  online (max, sum-exp) per row across its split and picks out the target logit. Splitting
  the vocabulary keeps every SM busy when N is small; the host merges the per-split partials.
  With ``STORE_LOGITS`` it also writes the tiles into a chunk buffer (single-pass entry).
* ``_dlogits_kernel``: grid (token blocks, vocabulary tiles). Each program gets one tile of
  logits, either recomputed with ``tl.dot`` (``RECOMPUTE``, general backward) or read from the
  chunk buffer (single pass), and overwrites it with dz in the input dtype.

Memory: the general op's forward keeps only lse (fp32 [N]); its backward walks the
vocabulary in column chunks (an [N, V_c] dz buffer, whole dW rows per chunk, an fp32 [N, H]
dx accumulator). The single pass walks the tokens in row chunks (a [C, V] buffer, an fp32
[V, H] dW accumulator). Either buffer is at most ``CHUNK_BYTES`` (512 MiB), never [N, V].
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
CHUNK_BYTES = 512 * 2**20
SPLIT_COLS_MULTIPLE = 256  # a split covers a multiple of every BLOCK_V below


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
def _logits_tile(x_ptr, w_ptr, b_ptr, rows, cols, row_mask, col_mask, H, stride_x, stride_w,
                 inv_temp, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr):
    """fp32 [BLOCK_N, BLOCK_V] tile of z = x W^T / tau + b."""
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_x
    w_cols = w_ptr + cols.to(tl.int64)[None, :] * stride_w
    for h0 in range(0, H, BLOCK_H):
        hs = h0 + tl.arange(0, BLOCK_H)
        h_mask = hs < H
        a = tl.load(x_rows + hs[None, :], mask=row_mask[:, None] & h_mask[None, :], other=0.0)
        w_t = tl.load(w_cols + hs[:, None], mask=h_mask[:, None] & col_mask[None, :], other=0.0)
        acc = tl.dot(a, w_t, acc)
    z = acc * inv_temp
    if HAS_BIAS:
        z += tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    return z


@triton.jit
def _logits_lse_kernel(x_ptr, w_ptr, b_ptr, labels_ptr, max_ptr, sum_ptr, target_ptr, z_ptr,
                       N, V, H, stride_x, stride_w, stride_z, cols_per_split, num_splits,
                       inv_temp, HAS_BIAS: tl.constexpr, STORE_LOGITS: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr):
    """Per (row, split): m = max_v z, s = sum_v exp(z - m), t = z[label] if label in split.

    The host merges splits: lse = M + log sum_s s_s exp(m_s - M), M = max_s m_s.
    """
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    labels = tl.load(labels_ptr + rows, mask=row_mask, other=-1)
    run_max = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    target = tl.zeros((BLOCK_N,), dtype=tl.float32)
    v_begin = pid_s * cols_per_split
    v_end = tl.minimum(v_begin + cols_per_split, V)
    for v0 in range(v_begin, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_mask = cols < v_end
        z = _logits_tile(x_ptr, w_ptr, b_ptr, rows, cols, row_mask, col_mask, H, stride_x,
                         stride_w, inv_temp, HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_H)
        if STORE_LOGITS:
            z_out = z_ptr + rows.to(tl.int64)[:, None] * stride_z + cols[None, :]
            tl.store(z_out, z.to(z_ptr.dtype.element_ty),
                     mask=row_mask[:, None] & col_mask[None, :])
        z = tl.where(col_mask[None, :], z, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(z, axis=1))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(z - new_max[:, None]), 1)
        run_max = new_max
        target += tl.sum(tl.where(cols[None, :] == labels[:, None], z, 0.0), axis=1)
    out = rows * num_splits + pid_s
    tl.store(max_ptr + out, run_max, mask=row_mask)
    tl.store(sum_ptr + out, run_sum, mask=row_mask)
    tl.store(target_ptr + out, target, mask=row_mask)


@triton.jit
def _dlogits_kernel(x_ptr, w_ptr, b_ptr, labels_ptr, lse_ptr, g_ptr, z_ptr,
                    N, V, H, stride_x, stride_w, stride_z, label_offset, inv_temp,
                    HAS_BIAS: tl.constexpr, RECOMPUTE: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr):
    """z_tile <- g_i * (1[v = y_i] - exp(z_iv - lse_i)) for one [BLOCK_N, BLOCK_V] tile.

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
        z = _logits_tile(x_ptr, w_ptr, b_ptr, rows, cols, row_mask, col_mask, H, stride_x,
                         stride_w, inv_temp, HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_H)
    else:
        z = tl.load(z_tile, mask=mask, other=0.0).to(tl.float32)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    g = tl.load(g_ptr + rows, mask=row_mask, other=0.0)
    labels = tl.load(labels_ptr + rows, mask=row_mask, other=-1) - label_offset
    onehot = tl.where(cols[None, :] == labels[:, None], 1.0, 0.0)
    dz = g[:, None] * (onehot - tl.exp(z - lse[:, None]))
    tl.store(z_tile, dz.to(z_ptr.dtype.element_ty), mask=mask)


# Both autotuned launches only write outputs that are pure functions of their inputs, so
# re-running them while tuning is harmless.
_logits_lse = triton.autotune(_gemm_configs(), key=["V", "H", "STORE_LOGITS"])(
    _logits_lse_kernel)
_dlogits_recompute = triton.autotune(_gemm_configs(), key=["V", "H"])(_dlogits_kernel)


def _num_splits(n_rows: int, vocab: int, device: torch.device) -> tuple[int, int]:
    """Split the vocabulary so that (token blocks x splits) fills the device twice over."""
    sms = 4 if INTERPRET else torch.cuda.get_device_properties(device).multi_processor_count
    row_blocks = triton.cdiv(n_rows, 128)
    splits = max(1, min(triton.cdiv(2 * sms, row_blocks), triton.cdiv(vocab, 1024)))
    cols = triton.cdiv(triton.cdiv(vocab, splits), SPLIT_COLS_MULTIPLE) * SPLIT_COLS_MULTIPLE
    return triton.cdiv(vocab, cols), cols


def _lse_and_target(x, w, b, labels, inv_temp, z_buffer=None):
    """Run the forward kernel on all rows of x; return (lse, target logit), fp32 [N]."""
    n, h = x.shape
    v = w.shape[0]
    splits, cols = _num_splits(n, v, x.device)
    part_max = torch.empty(n, splits, dtype=torch.float32, device=x.device)
    part_sum = torch.empty_like(part_max)
    part_target = torch.empty_like(part_max)
    store = z_buffer is not None
    z = z_buffer if store else part_max  # an unused pointer when not storing
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), splits)  # noqa: E731
    _logits_lse[grid](
        x, w, b if b is not None else x, labels, part_max, part_sum, part_target, z,
        n, v, h, x.stride(0), w.stride(0), z.stride(0) if store else 0, cols, splits,
        inv_temp, HAS_BIAS=b is not None, STORE_LOGITS=store)
    row_max = part_max.amax(dim=1, keepdim=True)
    lse = row_max.squeeze(1) + (part_sum * torch.exp(part_max - row_max)).sum(1).log()
    return lse, part_target.sum(1)


def _launch_dlogits(x, w, b, labels, lse, g, z, label_offset, inv_temp, recompute):
    """z <- dz for every tile of z; logits recomputed from x, w (or read from z itself)."""
    n, v = z.shape
    kernel, meta = (_dlogits_recompute, {}) if recompute else (_dlogits_kernel,
                                                               _ELEMENTWISE_BLOCKS)
    grid = lambda m: (triton.cdiv(n, m["BLOCK_N"]), triton.cdiv(v, m["BLOCK_V"]))  # noqa: E731
    kernel[grid](x, w, b if b is not None else x, labels, lse, g, z, n, v, x.shape[1],
                 x.stride(0), w.stride(0), z.stride(0), label_offset, inv_temp,
                 HAS_BIAS=b is not None, RECOMPUTE=recompute, **meta)


def _accumulate_mm(acc, a, b):
    """acc += a @ b with the product accumulated in fp32 inside the GEMM."""
    if acc.dtype == a.dtype:
        acc.addmm_(a, b)
    else:
        acc.add_(torch.mm(a, b))


def forward(x, w, b, labels, inv_temp):
    """Return (logp, lse), both float32 [N]."""
    lse, target = _lse_and_target(x, w, b, labels, inv_temp)
    return target - lse, lse


def backward(x, w, b, labels, lse, grad, inv_temp, needs, chunk_cols=None):
    """Gradients (dx, dW, db) of sum_i grad_i * logp_i, walking the vocabulary in chunks."""
    need_x, need_w, need_b = needs
    n, v = x.shape[0], w.shape[0]
    cols = chunk_cols or max(256, CHUNK_BYTES // (max(n, 1) * x.element_size()) // 256 * 256)
    cols = min(cols, v)
    g = (grad * inv_temp).float()  # fold 1/tau into dz, so dx = dz W and dW = dz^T x
    z = torch.empty(n, cols, dtype=x.dtype, device=x.device)
    dx = torch.zeros(x.shape, dtype=torch.float32, device=x.device) if need_x else None
    dw = torch.empty_like(w) if need_w else None
    db = torch.empty_like(b) if (need_b and b is not None) else None
    for v0 in range(0, v, cols):
        v1 = min(v0 + cols, v)
        dz = z[:, : v1 - v0]
        b_c = None if b is None else b[v0:v1]
        _launch_dlogits(x, w[v0:v1], b_c, labels, lse, g, dz, v0, inv_temp, recompute=True)
        if dx is not None:
            _accumulate_mm(dx, dz, w[v0:v1])
        if dw is not None:
            torch.mm(dz.t(), x, out=dw[v0:v1])
        if db is not None:
            db[v0:v1] = dz.sum(0, dtype=torch.float32) / inv_temp
    return (None if dx is None else dx.to(x.dtype)), dw, db


def forward_backward(x, w, b, labels, coef, inv_temp, needs, chunk_rows=None):
    """Single pass: (logp, dx, dW, db) of sum_i coef_i * logp_i, logits computed once.

    Per chunk of rows: the forward kernel writes the logits into the chunk buffer while it
    finds lse; the dlogits kernel turns them into dz in place; cuBLAS does dz W and dz^T x.
    """
    need_x, need_w, need_b = needs
    n, v = x.shape[0], w.shape[0]
    rows = chunk_rows or max(128, CHUNK_BYTES // (v * x.element_size()) // 128 * 128)
    rows = min(rows, n)
    g = (coef * inv_temp).float()
    z = torch.empty(rows, v, dtype=x.dtype, device=x.device)
    logp = torch.empty(n, dtype=torch.float32, device=x.device)
    dx = torch.empty_like(x) if need_x else None
    dw = torch.zeros(w.shape, dtype=torch.float32, device=x.device) if need_w else None
    db = torch.zeros(v, dtype=torch.float32, device=x.device) if (need_b and b is not None) else None
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        x_c, y_c, dz = x[r0:r1], labels[r0:r1], z[: r1 - r0]
        lse, target = _lse_and_target(x_c, w, b, y_c, inv_temp, z_buffer=dz)
        logp[r0:r1] = target - lse
        _launch_dlogits(x_c, w, b, y_c, lse, g[r0:r1], dz, 0, inv_temp, recompute=False)
        if dx is not None:
            torch.mm(dz, w, out=dx[r0:r1])
        if dw is not None:
            _accumulate_mm(dw, dz.t(), x_c)
        if db is not None:
            db.add_(dz.sum(0, dtype=torch.float32))
    if db is not None:
        db = (db / inv_temp).to(b.dtype)
    return logp, dx, (None if dw is None else dw.to(w.dtype)), db
