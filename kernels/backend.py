"""Which backend runs the ops: ``select_backend`` (one place for the choice), the Triton ->
PyTorch fallback of ``backend="auto"`` on CUDA, and ``resolved_backend`` (what runs, for logs).

The ops (``linear_logprobs``, ``sequence_group_loss``) import this module and call
``select_backend``; it imports only the backends, never the ops, so the dependency goes one
way (as Cut Cross-Entropy's ``linear_cross_entropy`` dispatcher does).

``auto`` on CUDA: the Triton kernels are compiled on first use for the device at hand, so they
can fail where the PyTorch path would not: a compile error, a launch that needs more shared
memory or registers than the GPU has (``OutOfResources``), a dtype or architecture the
compiler does not support, a driver that cannot load the binary. ``TritonOrTorch`` runs each
call of the op on ``triton_impl`` and, the first time one raises, warns once naming the error
and runs that call and every later one in the process on ``torch_impl`` (which runs on CUDA
too: same contract and results, more time and a larger logits chunk). Running out of GPU
memory is not such a failure (the PyTorch path needs more memory, not less) and is raised.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

import torch

from . import torch_impl

BACKENDS = ("auto", "torch", "triton")

_state: dict[str, str | None] = {"failure": None}  # "<error type>: <message>" once Triton failed


def _triton_impl() -> ModuleType:
    # imported on first use: triton reads TRITON_INTERPRET then
    return importlib.import_module(".triton_impl", __package__)


def failure() -> str | None:
    """The error that switched ``auto`` to the PyTorch path in this process, or None."""
    return _state["failure"]


def _fall_back(err: Exception) -> None:
    if _state["failure"] is None:
        _state["failure"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}" \
            if str(err).strip() else type(err).__name__
        warnings.warn(f"redi: the Triton kernels failed ({_state['failure']}); backend='auto' "
                      "runs the chunked PyTorch path from now on in this process",
                      RuntimeWarning, stacklevel=4)


class TritonOrTorch:
    """An op backend (``forward``, ``backward``, ``forward_backward``) that tries Triton."""

    def _call(self, name, *args, **kwargs):
        if _state["failure"] is None:
            try:
                return getattr(_triton_impl(), name)(*args, **kwargs)
            except torch.OutOfMemoryError:
                raise
            except Exception as err:  # compile, resource, dtype or launch failure
                _fall_back(err)
        return getattr(torch_impl, name)(*args, **kwargs)

    def forward(self, *args, **kwargs):
        return self._call("forward", *args, **kwargs)

    def backward(self, *args, **kwargs):
        return self._call("backward", *args, **kwargs)

    def forward_backward(self, *args, **kwargs):
        return self._call("forward_backward", *args, **kwargs)


TRITON_OR_TORCH = TritonOrTorch()


def auto_prefers_triton(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cuda" and dtype != torch.float64


def select_backend(backend: str, device: torch.device, dtype: torch.dtype):
    """The backend (a module or ``TRITON_OR_TORCH``) that runs ``backend`` for ``dtype`` inputs
    on ``device``; a one-line ValueError for a name it does not know or a pairing it cannot
    run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if auto_prefers_triton(device, dtype):
            return TRITON_OR_TORCH  # Triton, or torch_impl if it fails
        backend = "torch"
    if backend == "torch":
        return torch_impl
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"backend='triton' needs CUDA tensors (got {device.type}); use backend='torch' "
            "or 'auto' on CPU, or set TRITON_INTERPRET=1 before importing redi to debug")
    if dtype == torch.float64:
        raise ValueError("backend='triton' supports float32, bfloat16 and float16, not float64")
    return _triton_impl()


def resolved_backend(backend: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """What ``backend`` runs on ``device`` for ``dtype`` inputs now: "torch", "triton", or
    "torch (Triton failed: <error>)" after ``auto`` fell back."""
    impl = select_backend(backend, torch.device(device), dtype)
    if impl is torch_impl:
        return "torch"
    if impl is TRITON_OR_TORCH and failure() is not None:
        return f"torch (Triton failed: {failure()})"
    return "triton"
