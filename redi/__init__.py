"""redi: Reinforcement Distillation (REDI) for small reasoning models.

Public API (imported lazily, so ``import redi`` stays cheap for the data tools):

* ``redi.token_logprobs`` / ``redi.weighted_logprob_sum``: fused per-token log-probs of a
  linear head, never materializing the [tokens x vocab] logits (``redi.kernels``).
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "token_logprobs": "redi.kernels",
    "weighted_logprob_sum": "redi.kernels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'redi' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
