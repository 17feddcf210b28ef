"""Per-token log-probabilities of a linear head, without materializing the logits.

For final hidden states x_i (rows of ``hidden``), an lm_head weight W [V, H], an optional
bias b [V], an optional softcap c, a temperature tau and aligned labels y_i::

    z_i    = c tanh((x_i W^T + b) / c) / tau     ((x_i W^T + b) / tau without a softcap)
    logp_i = log_softmax(z_i)[y_i]                (0 where y_i == ignore_index)

(why this order: ``logit_transform.py``).

Two entries share the backends (``torch_impl`` on CPU, ``triton_impl`` on CUDA; ``backend.py``
chooses):

* ``token_logprobs`` returns every logp_i and accepts any upstream gradient dL/dlogp_i
  (DPO, SimPO, RL losses). Its backward recomputes the logits: 4 matmul-equivalents
  (logits in forward; logits again, dz W and dz^T x in backward).
* ``weighted_logprob_sum`` returns sum_i c_i logp_i for coefficients c fixed before the
  call (SFT, REDI). dL/dlogp_i = c_i is then known in the forward pass, so the gradients are
  produced in the same pass as the value and backward only scales them: 3 matmuls. With
  per-token floors f_i it returns sum_i c_i max(logp_i, f_i): dL/dlogp_i = c_i 1[logp_i >= f_i]
  is known in the same pass as soon as logp_i is, before the token's dz is formed (REDI's
  ``negative_floor``).

A third entry, ``sequence_group_loss`` (its own module), builds on the single pass for losses
of per-sequence sums made of one term per pair (DPO, SimPO).

Gradients (g_i = upstream gradient, or c_i; s = x W^T + b, the raw head output)::

    dz_iv = g_i (1[v = y_i] - softmax(z_i)_v),   ds_iv = dz_iv (1 - tanh^2(s_iv / c)) / tau
    dL/dx = ds W,   dL/dW = ds^T x,   dL/db = sum_i ds_i        (no tanh term without a cap)

Extra memory is O(N*H + V*H + one bounded chunk of logits); see each backend for its chunk.
"""

from __future__ import annotations

import functools
from typing import Literal, overload

import torch

from .backend import select_backend
from .logit_transform import LogitTransform

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def logp_dtype(hidden: torch.Tensor) -> torch.dtype:
    """Log-probs are float32, or float64 for float64 inputs (the torch backend's reference
    precision)."""
    return torch.float64 if hidden.dtype == torch.float64 else torch.float32


def check_per_token(name, t, labels, hidden):
    """A floating-point tensor of labels' shape on hidden's device (one-line ValueError
    naming ``name``), flattened."""
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(labels.shape):
        raise ValueError(f"{name} must be a tensor of labels' shape {tuple(labels.shape)}")
    if t.device != hidden.device or not t.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor on hidden's device")
    return t.reshape(-1)


def check_inputs(hidden, weight, labels, bias, ignore_index, temperature, softcap=None):
    """Validate the op's inputs (one-line ValueError naming the argument); return the
    ``LogitTransform`` of ``temperature`` and ``softcap``."""
    for name, t in (("hidden", hidden), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not (t.dtype in _FLOAT_DTYPES or t.dtype == torch.float64):
            raise ValueError(f"{name} must be float32, bfloat16, float16 (or float64 on the "
                             f"torch backend), got {t.dtype}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be [V, H], got shape {tuple(weight.shape)}")
    if hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"hidden's last dim ({hidden.shape[-1] if hidden.dim() else None}) must equal "
            f"weight's H ({weight.shape[1]}); got hidden {tuple(hidden.shape)}, "
            f"weight {tuple(weight.shape)}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden ({hidden.dtype}) and weight ({weight.dtype}) must share a dtype")
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or \
            labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError("labels must be an integer tensor")
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"labels' shape {tuple(labels.shape)} must equal hidden's leading shape "
            f"{tuple(hidden.shape[:-1])}")
    tensors = {"hidden": hidden, "weight": weight, "labels": labels}
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must be a [V] = [{weight.shape[0]}] tensor")
        if not bias.dtype.is_floating_point:
            raise ValueError(f"bias must be floating point, got {bias.dtype}")
        tensors["bias"] = bias
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")
    transform = LogitTransform(temperature, softcap)
    vocab = weight.shape[0]
    bad = ((labels < 0) | (labels >= vocab)) & (labels != ignore_index)
    if bool(bad.any()):
        position = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"labels must be in [0, {vocab}) or ignore_index={ignore_index}; "
            f"labels{list(position)} = {int(labels[position])}")
    return transform


def flatten_inputs(hidden, weight, labels, ignore_index):
    x = hidden.reshape(-1, hidden.shape[-1]).contiguous()
    flat = labels.reshape(-1)
    valid = flat != ignore_index
    safe_labels = torch.where(valid, flat, 0).to(torch.int64)
    return x, weight.contiguous(), safe_labels, valid


def grads_needed(hidden, weight, bias):
    on = torch.is_grad_enabled()
    return (on and hidden.requires_grad, on and weight.requires_grad,
            on and bias is not None and bias.requires_grad)


class _ValidRows:
    """The rows whose label is not ignored. Only they need logits: prompt and padding rows
    have logp = 0 and no gradient, so they are dropped before the vocabulary-sized work
    and get zeros back (a padded batch pays nothing for its padding)."""

    def __init__(self, valid: torch.Tensor):
        self.count = valid.numel()
        self.index = None if bool(valid.all()) else valid.nonzero().squeeze(1)

    @property
    def empty(self) -> bool:
        return self.index is not None and self.index.numel() == 0

    def take(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.index is None else t.index_select(0, self.index)

    @overload
    def put(self, values: torch.Tensor) -> torch.Tensor: ...
    @overload
    def put(self, values: None) -> None: ...

    def put(self, values: torch.Tensor | None) -> torch.Tensor | None:
        """Rows of ``values`` back at their places among all rows, zeros elsewhere."""
        if values is None or self.index is None:
            return values
        full = values.new_zeros((self.count, *values.shape[1:]))
        return full.index_copy_(0, self.index, values)


def first_order_only(backward):
    """For an autograd Function's backward that is not itself differentiable: refuse
    ``create_graph=True`` (double backward) with a clear error, where it would fail inside
    a matmul or return gradients without a graph."""

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(f"{type(ctx).__name__.removesuffix('Backward')}: the fused "
                               "log-prob ops support first-order gradients only "
                               "(backward with create_graph=True is not supported)")
        return backward(ctx, *grads)

    return wrapper


def _zero_grads(x, w, b, needs):
    grads = (torch.zeros_like(x), torch.zeros_like(w), None if b is None else torch.zeros_like(b))
    return tuple(g if need else None for g, need in zip(grads, needs))


class TokenLogprobsFunction(torch.autograd.Function):
    """logp = log_softmax(z)[y], z the transformed logits of x W^T + b (``tf``); backward
    recomputes the logits chunk by chunk."""

    @staticmethod
    def forward(ctx, x, w, b, labels, valid, tf, impl):
        rows = _ValidRows(valid)
        lse = None
        if rows.empty:
            logp = torch.zeros(rows.count, dtype=logp_dtype(x), device=x.device)
        else:
            logp, lse = impl.forward(rows.take(x), w, b, rows.take(labels), tf)
            logp = rows.put(logp)
        ctx.save_for_backward(x, w, b, labels, lse)
        ctx.rows, ctx.tf, ctx.impl = rows, tf, impl
        return logp

    @staticmethod
    @first_order_only
    def backward(ctx, grad_logp):
        x, w, b, labels, lse = ctx.saved_tensors
        rows, needs = ctx.rows, tuple(ctx.needs_input_grad[:3])
        if rows.empty:
            return (*_zero_grads(x, w, b, needs), None, None, None, None)
        dx, dw, db = ctx.impl.backward(rows.take(x), w, b, rows.take(labels), lse,
                                       rows.take(grad_logp.float()), ctx.tf, needs)
        return rows.put(dx), dw, db, None, None, None, None


def hand_over_grads(ctx, grad_total):
    """The gradients a single-pass forward left on ``ctx.grads``, scaled in place by the
    upstream gradient of its scalar output and released: autograd takes them without a copy.
    The fp32 scale multiplies in fp32 (a 16-bit grad is not rounded to its dtype first)."""
    if ctx.grads is None:
        raise RuntimeError("single-pass ops support one backward per forward (their "
                           "gradients were already handed over)")
    grads, ctx.grads = ctx.grads, None
    return tuple(None if g is None else g.mul_(grad_total) for g in grads)


class WeightedLogprobSumFunction(torch.autograd.Function):
    """sum_i c_i max(logp_i, f_i) with its gradients computed in the forward pass and scaled
    in backward (no floor f: sum_i c_i logp_i). The floor is a constant (no gradient).

    Also returns the per-token logp (not floored; detached, for metrics). The gradients are
    kept on ctx (not saved tensors) so backward can hand them over without a copy: they are
    scaled in place and autograd takes them as they are, so dW exists once, not twice. Hence
    one backward per forward (no ``retain_graph``).
    """

    @staticmethod
    def forward(ctx, x, w, b, coef, floor, labels, valid, tf, impl, needs):
        rows = _ValidRows(valid)
        if rows.empty:
            logp = torch.zeros(rows.count, dtype=logp_dtype(x), device=x.device)
            ctx.grads = _zero_grads(x, w, b, needs)
        else:
            c = rows.take(coef.float())
            floor_rows = None if floor is None else rows.take(floor)
            logp, dx, dw, db = impl.forward_backward(rows.take(x), w, b, rows.take(labels), c,
                                                     tf, needs, floor=floor_rows)
            logp = rows.put(logp)
            ctx.grads = (rows.put(dx), dw, db)
        seen = logp if floor is None else torch.where(valid, torch.maximum(logp, floor), 0.0)
        ctx.save_for_backward(seen)
        ctx.coef_dtype = coef.dtype
        ctx.mark_non_differentiable(logp)
        return (coef.float().masked_fill(~valid, 0.0) * seen).sum(), logp

    @staticmethod
    @first_order_only
    def backward(ctx, grad_total, _grad_logp):
        dx, dw, db = hand_over_grads(ctx, grad_total)
        (seen,) = ctx.saved_tensors
        dcoef = (seen * grad_total).to(ctx.coef_dtype) if ctx.needs_input_grad[3] else None
        return dx, dw, db, dcoef, None, None, None, None, None, None


def _zero_on_graph(hidden, weight, bias) -> torch.Tensor:
    """A float32 zero that depends on the inputs, so that backward gives them zero grads."""
    zero = hidden.sum() * 0 + weight.sum() * 0 + (0 if bias is None else bias.sum() * 0)
    return zero.float()


def token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                   bias: torch.Tensor | None = None, ignore_index: int = -100,
                   temperature: float = 1.0, softcap: float | None = None,
                   backend: str = "auto") -> torch.Tensor:
    """Per-token log-probabilities ``log_softmax(z)[labels]`` of the logits
    ``z = softcap * tanh((hidden @ weight.T + bias) / softcap) / temperature``.

    Args:
        hidden: [..., H] final hidden states (float32, bfloat16 or float16).
        weight: [V, H] output-embedding (lm_head) weight, same dtype as ``hidden``.
        labels: [...] integer targets aligned with ``hidden`` (label i is the token hidden i
            predicts), in [0, V) or ``ignore_index``.
        bias: optional [V] lm_head bias.
        temperature: divides the logits (after the softcap), > 0.
        softcap: None, or c > 0 for Gemma-style soft capping ``c * tanh(s / c)`` of the head's
            output s (a model config's ``final_logit_softcapping``).
        backend: "triton" (CUDA), "torch" (chunked PyTorch), or "auto" (Triton on CUDA).

    Returns:
        float32 tensor of labels' shape (float64 for float64 inputs on the torch backend);
        exactly 0 where ``labels == ignore_index``.
        Differentiable w.r.t. hidden, weight and bias under any upstream gradient.
    """
    tf = check_inputs(hidden, weight, labels, bias, ignore_index, temperature, softcap)
    impl = select_backend(backend, hidden.device, hidden.dtype)
    x, w, safe_labels, valid = flatten_inputs(hidden, weight, labels, ignore_index)
    if x.shape[0] == 0:  # no rows: zeros that still carry the graph (zero gradients)
        return torch.zeros(labels.shape, dtype=logp_dtype(hidden), device=hidden.device) + \
            _zero_on_graph(hidden, weight, bias)
    logp = TokenLogprobsFunction.apply(x, w, bias, safe_labels, valid, tf, impl)
    return logp.view(labels.shape)


@overload
def weighted_logprob_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         coef: torch.Tensor, *, bias: torch.Tensor | None = ...,
                         ignore_index: int = ..., temperature: float = ...,
                         softcap: float | None = ..., backend: str = ...,
                         logprob_floor: torch.Tensor | None = ...,
                         return_logprobs: Literal[False] = ...) -> torch.Tensor: ...
@overload
def weighted_logprob_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         coef: torch.Tensor, *, bias: torch.Tensor | None = ...,
                         ignore_index: int = ..., temperature: float = ...,
                         softcap: float | None = ..., backend: str = ...,
                         logprob_floor: torch.Tensor | None = ...,
                         return_logprobs: Literal[True]) -> tuple[torch.Tensor, torch.Tensor]: ...


def weighted_logprob_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         coef: torch.Tensor, *, bias: torch.Tensor | None = None,
                         ignore_index: int = -100, temperature: float = 1.0,
                         softcap: float | None = None, backend: str = "auto",
                         logprob_floor: torch.Tensor | None = None,
                         return_logprobs: bool = False,
                         ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``sum(coef * logp)`` for a loss linear in the token log-probs, in a single pass.

    ``logp`` is exactly what :func:`token_logprobs` returns (same ``temperature`` and
    ``softcap``); ``coef`` has labels' shape (its
    entries at ignored positions do not matter). The gradients w.r.t. hidden, weight and
    bias are produced in the forward pass (3 matmuls, no recomputation) and scaled by the
    upstream gradient in backward; the gradient w.r.t. ``coef`` is ``logp``.

    ``logprob_floor`` (labels' shape, or None) bounds each token's log-prob from below::

        total = sum_i coef_i max(logp_i, f_i)

    A token under its floor adds the constant coef_i f_i and no gradient: its coefficient
    becomes coef_i 1[logp_i >= f_i] in the same pass, once logp_i is known (-inf: no floor;
    the gradient w.r.t. ``coef`` is max(logp, f); ``logprob_floor`` itself gets none).

    With ``return_logprobs=True`` also returns the per-token float32 ``logp`` (detached; the
    log-probs themselves, not floored).
    """
    tf = check_inputs(hidden, weight, labels, bias, ignore_index, temperature, softcap)
    coef = check_per_token("coef", coef, labels, hidden)
    floor = None if logprob_floor is None else check_per_token(
        "logprob_floor", logprob_floor, labels, hidden).detach().to(logp_dtype(hidden))
    impl = select_backend(backend, hidden.device, hidden.dtype)
    x, w, safe_labels, valid = flatten_inputs(hidden, weight, labels, ignore_index)
    if x.shape[0] == 0:
        zero = _zero_on_graph(hidden, weight, bias)
        empty = torch.zeros(labels.shape, dtype=logp_dtype(hidden), device=hidden.device)
        return (zero, empty) if return_logprobs else zero
    total, logp = WeightedLogprobSumFunction.apply(
        x, w, bias, coef, floor, safe_labels, valid, tf, impl,
        grads_needed(hidden, weight, bias))
    return (total, logp.view(labels.shape)) if return_logprobs else total
