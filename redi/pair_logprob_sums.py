"""Per-pair summed log-probs of the chosen and rejected completions under a linear head: the
library helper behind DPO's reference log-probs (the trainer's and the TRL integration's)."""

from __future__ import annotations

import torch

from redi.kernels.linear_logprobs import token_logprobs
from redi.paired_sequences import PairedSequences


def pair_logprobs(weight: torch.Tensor, hidden: torch.Tensor, labels: torch.Tensor,
                  bias: torch.Tensor | None = None, *, ignore_index: int = -100,
                  backend: str = "auto", softcap: float | None = None, temperature: float = 1.0,
                  **layout: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed completion log-probs ``sum_t log softmax(z_t)[y_t]``, ``[B]``
    each, ``z_t = softcap tanh((h_t W^T + b) / softcap) / temperature`` (as in
    ``redi.token_logprobs``), for a padded or packed pair batch (layout as in
    ``redi.paired_sequences``), computed by the fused op without materializing the logits.
    Used for DPO's reference model."""
    pairs = PairedSequences.from_batch(hidden, labels, ignore_index, **layout)
    sums = pairs.sequence_sums(token_logprobs(pairs.hidden, weight, pairs.labels, bias=bias,
                                              ignore_index=ignore_index, backend=backend,
                                              softcap=softcap, temperature=temperature))
    return sums[pairs.chosen], sums[pairs.rejected]
