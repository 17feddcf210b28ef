"""``backend="auto"`` on CUDA: the Triton kernels, or the chunked PyTorch path if they fail.

The Triton kernels are compiled on first use for the device at hand, so they can fail where
the PyTorch path would not: a compile error, a launch that needs more shared memory or
registers than the GPU has (``OutOfResources``), a dtype or architecture the compiler does
not support, a driver that cannot load the binary. ``TritonOrTorch`` runs each call of
the op on ``triton_impl`` and, the first time one raises, warns once naming the error and
runs that call and every later one in the process on ``torch_impl`` (which runs on CUDA
too: same contract and results, more time and a larger logits chunk). Running out of GPU
memory is not such a failure (the PyTorch path needs more memory, not less) and is raised.

``resolved_backend`` says which backend a given ``backend`` argument runs now, for logs.
"""

from __future__ import annotations

import importlib
import warnings

import torch

from . import torch_impl

_state = {"failure": None}  # "<error type>: <message>" once the Triton path has failed


def failure() -> str | None:
    """The error that switched ``auto`` to the PyTorch path in this process, or None."""
    return _state["failure"]


def _fall_back(err: Exception):
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
                triton_impl = importlib.import_module(".triton_impl", __package__)
                return getattr(triton_impl, name)(*args, **kwargs)
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


def resolved_backend(backend: str, device, dtype: torch.dtype) -> str:
    """What ``backend`` runs on ``device`` for ``dtype`` inputs now: "torch", "triton", or
    "torch (Triton failed: <error>)" after ``auto`` fell back."""
    from .linear_logprobs import select_backend

    impl = select_backend(backend, torch.device(device), dtype)
    if impl is torch_impl:
        return "torch"
    if impl is TRITON_OR_TORCH and failure() is not None:
        return f"torch (Triton failed: {failure()})"
    return "triton"
