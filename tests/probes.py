"""Instruments for tests: what the code under test allocates."""

import torch


class MaxBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the largest tensor (in bytes) any aten op produces. Counts bytes because the
    Triton interpreter copies kernel arguments as raw byte storages."""

    def __init__(self):
        super().__init__()
        self.max_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.max_bytes = max(self.max_bytes, t.numel() * t.element_size())
        return out
