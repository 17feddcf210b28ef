"""Fused linear log-prob kernels (installed as ``redi.kernels``).

The public entries are re-exported by ``redi``; trainers should import them from there.
"""

from .fallback import resolved_backend
from .linear_logprobs import BACKENDS, token_logprobs, weighted_logprob_sum
from .sequence_group_loss import sequence_group_loss

__all__ = ["BACKENDS", "resolved_backend", "sequence_group_loss", "token_logprobs",
           "weighted_logprob_sum"]
