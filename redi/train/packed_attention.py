"""Packed rows (several sequences in one row, positions restarting at 0 per sequence) on
attention kernels without variable-length support (sdpa, eager): each sequence attends
within itself, one sequence at a time, so nothing of size [N, N] is built for a row of N
tokens (flash-attn separates the sequences itself, by their position ids).

``CausalLMWithFusedLoss`` switches its model to ``packed_name(base)`` (``redi_packed_sdpa``,
``redi_packed_eager``), registered with transformers' attention and mask interfaces. Padded
and unpacked batches run the base implementation with its usual mask. A packed batch passes
``packed_inputs(cu_seqlens)``: a mask mapping of None, so transformers builds no mask (left
alone, it would build an [N, N] block-causal one from the position ids), and the sequences'
bounds, by which each decoder layer's attention runs the base implementation on one
sequence at a time: causal by ``is_causal`` under sdpa, with that sequence's [n, n] causal
mask under eager (whose scores are [n, n] anyway). The sequences' queries, keys and values
are those of the whole row (RoPE already applied at their own positions), so the result is
the block-causal attention of the row, computed in pieces.
"""

from __future__ import annotations

import sys

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

_PREFIX = "redi_packed_"
BASES = ("sdpa", "eager")


def packed_name(base: str) -> str:
    return _PREFIX + base


def is_packed(implementation: str | None) -> bool:
    return bool(implementation) and implementation.startswith(_PREFIX)


def packed_inputs(cu_seqlens: torch.Tensor) -> dict:
    """The decoder inputs of a packed row beyond ids and positions (see the module doc)."""
    bounds = cu_seqlens.tolist()  # once per forward, not per layer
    return {"attention_mask": {"full_attention": None, "sliding_attention": None},
            "packed_sequences": tuple(zip(bounds[:-1], bounds[1:]))}


def _causal_mask(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[1, 1, n, n] additive causal mask of one sequence (eager adds it to the scores)."""
    visible = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    mask = torch.zeros(n, n, dtype=dtype, device=device)
    return mask.masked_fill_(~visible, torch.finfo(dtype).min)[None, None]


def _base_function(base: str, module: torch.nn.Module):
    if base == "eager":  # each model file has its own eager_attention_forward
        return sys.modules[type(module).__module__].eager_attention_forward
    return AttentionInterface._global_mapping[base]


def _attention(base: str):
    def attention(module, query, key, value, attention_mask, packed_sequences=None, **kwargs):
        run = _base_function(base, module)
        if packed_sequences is None:
            return run(module, query, key, value, attention_mask, **kwargs)
        outputs = []
        for start, end in packed_sequences:
            mask = (_causal_mask(end - start, query.dtype, query.device) if base == "eager"
                    else None)
            out, _ = run(module, query[:, :, start:end], key[:, :, start:end],
                         value[:, :, start:end], mask, **kwargs)
            outputs.append(out)
        return torch.cat(outputs, dim=1), None  # [B, N, heads, head_dim]

    return attention


for _base in BASES:
    AttentionInterface.register(packed_name(_base), _attention(_base))
    AttentionMaskInterface.register(packed_name(_base),
                                    ALL_MASK_ATTENTION_FUNCTIONS._global_mapping[_base])
