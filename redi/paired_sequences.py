"""Which token belongs to which sequence, and which sequences form (chosen, rejected) pairs.

Preference losses accept two layouts and reduce both to the same flat form:

* padded: hidden ``[2B, T, H]``, labels ``[2B, T]``; rows ``0..B-1`` are the chosen
  sequences and rows ``B..2B-1`` the rejected ones, pair ``i`` = (row i, row B + i);
* packed (padding-free): hidden ``[N, H]`` (or ``[1, N, H]``), labels ``[N]`` (or
  ``[1, N]``), the sequence of each token as ``seq_index [N]`` or ``cu_seqlens [S + 1]``,
  and the pairs as ``chosen_index [B]``, ``rejected_index [B]`` (sequence ids).

Labels are aligned with hidden (already shifted) and hold ``ignore_index`` on prompt and
padding; a sequence's completion length ``|y|`` is its count of other labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# What a packed pair batch from ``redi.data.make_collator("pairs", packed=True)`` passes to
# ``from_batch`` (and to the losses): the sequence of each token and the pairing.
PAIR_LAYOUT_KEYS = ("seq_index", "chosen_index", "rejected_index")

@dataclass
class PairedSequences:
    hidden: torch.Tensor  # [N, H]
    labels: torch.Tensor  # [N]
    seq_index: torch.Tensor  # [N] long, sequence id of each token
    chosen: torch.Tensor  # [B] sequence ids
    rejected: torch.Tensor  # [B] sequence ids
    lengths: torch.Tensor  # [S] float, completion tokens per sequence

    def sequence_sums(self, token_values: torch.Tensor) -> torch.Tensor:
        """[N] per-token values -> [S] per-sequence sums (differentiable)."""
        sums = token_values.new_zeros(self.lengths.shape[0])
        return sums.index_add(0, self.seq_index, token_values)

    def token_values(self, chosen_values, rejected_values) -> torch.Tensor:
        """Per-pair values for the chosen and the rejected sequence -> [N] per token (0 on
        sequences in no pair)."""
        per_seq = chosen_values.new_zeros(self.lengths.shape[0])
        per_seq = per_seq.index_copy(0, self.chosen, chosen_values)
        per_seq = per_seq.index_copy(0, self.rejected, rejected_values)
        return per_seq[self.seq_index]

    @classmethod
    def from_batch(cls, hidden, labels, ignore_index=-100, *, seq_index=None, cu_seqlens=None,
                   chosen_index=None, rejected_index=None) -> PairedSequences:
        packed = any(t is not None for t in (seq_index, cu_seqlens, chosen_index,
                                              rejected_index))
        if packed:
            return cls._from_packed(hidden, labels, ignore_index, seq_index, cu_seqlens,
                                    chosen_index, rejected_index)
        return cls._from_padded(hidden, labels, ignore_index)

    @classmethod
    def _from_padded(cls, hidden, labels, ignore_index):
        if hidden.dim() != 3 or labels.shape != hidden.shape[:2]:
            raise ValueError(
                "padded preference batches need hidden [2B, T, H] and labels [2B, T]; got "
                f"hidden {tuple(hidden.shape)}, labels {tuple(labels.shape)} (for packed "
                "batches pass seq_index or cu_seqlens with chosen_index and rejected_index)")
        rows, t = labels.shape
        if rows == 0:
            raise ValueError("an empty preference batch: hidden and labels have no rows "
                             "(at least one chosen and one rejected row are needed)")
        if rows % 2:
            raise ValueError(f"a padded preference batch needs an even first dimension "
                             f"(B chosen rows, then B rejected rows), got {rows}")
        b = rows // 2
        seq = torch.arange(rows, device=labels.device).repeat_interleave(t)
        pairs = torch.arange(b, device=labels.device)
        return cls._build(hidden.reshape(rows * t, -1), labels.reshape(-1), seq, rows,
                          pairs, pairs + b, ignore_index)

    @classmethod
    def _from_packed(cls, hidden, labels, ignore_index, seq_index, cu_seqlens, chosen_index,
                     rejected_index):
        if hidden.dim() == 3 and hidden.shape[0] == 1:
            hidden, labels = hidden[0], labels.reshape(-1)
        if hidden.dim() != 2 or labels.dim() != 1 or labels.shape[0] != hidden.shape[0]:
            raise ValueError(f"packed batches need hidden [N, H] and labels [N]; got hidden "
                             f"{tuple(hidden.shape)}, labels {tuple(labels.shape)}")
        n = labels.shape[0]
        if (seq_index is None) == (cu_seqlens is None):
            raise ValueError("packed batches need exactly one of seq_index and cu_seqlens")
        if chosen_index is None or rejected_index is None:
            raise ValueError("packed batches need chosen_index and rejected_index")
        if cu_seqlens is not None:
            seq_index = _seq_index_from_cu_seqlens(cu_seqlens.to(labels.device), n)
        seq_index = seq_index.reshape(-1).long().to(labels.device)
        if seq_index.shape[0] != n:
            raise ValueError(f"seq_index has {seq_index.shape[0]} entries for {n} tokens")
        if n and int(seq_index.min()) < 0:
            raise ValueError("seq_index must be >= 0")
        num_seqs = int(seq_index.max()) + 1 if n else 0
        chosen, rejected = (i.reshape(-1).long().to(labels.device)
                            for i in (chosen_index, rejected_index))
        return cls._build(hidden, labels, seq_index, num_seqs, chosen, rejected, ignore_index)

    @classmethod
    def _build(cls, hidden, labels, seq_index, num_seqs, chosen, rejected, ignore_index):
        _check_pairing(chosen, rejected, num_seqs)
        valid = labels != ignore_index
        lengths = torch.bincount(seq_index[valid], minlength=num_seqs).float()
        unpaired = torch.ones(num_seqs, dtype=torch.bool, device=labels.device)
        unpaired[chosen] = False
        unpaired[rejected] = False
        if bool((unpaired & (lengths > 0)).any()):
            seq = int((unpaired & (lengths > 0)).nonzero()[0])
            raise ValueError(f"sequence {seq} has completion tokens but belongs to no pair")
        for side, ids in (("chosen", chosen), ("rejected", rejected)):
            empty = lengths[ids] == 0
            if bool(empty.any()):
                pair = int(empty.nonzero()[0])
                raise ValueError(
                    f"pair {pair}: the {side} sequence (sequence {int(ids[pair])}) has no "
                    "completion tokens (every label is ignore_index); length-normalized "
                    "losses are undefined for it")
        return cls(hidden, labels, seq_index, chosen, rejected, lengths)


def _seq_index_from_cu_seqlens(cu_seqlens, n):
    cu = cu_seqlens.reshape(-1).long()
    if cu.numel() < 2 or int(cu[0]) != 0 or int(cu[-1]) != n or bool((cu.diff() < 0).any()):
        raise ValueError(f"cu_seqlens must rise from 0 to the token count {n}, got "
                         f"{cu.tolist()[:8]}{'...' if cu.numel() > 8 else ''}")
    return torch.arange(cu.numel() - 1, device=cu.device).repeat_interleave(cu.diff())


def _check_pairing(chosen, rejected, num_seqs):
    if chosen.shape != rejected.shape or chosen.numel() == 0:
        raise ValueError(f"chosen_index and rejected_index must be non-empty and equally long, "
                         f"got {chosen.numel()} and {rejected.numel()}")
    both = torch.cat([chosen, rejected])
    if int(both.min()) < 0 or int(both.max()) >= num_seqs:
        raise ValueError(f"pair indices must name sequences in [0, {num_seqs}), got "
                         f"{both.min().item()}..{both.max().item()}")
    if both.unique().numel() != both.numel():
        raise ValueError("each sequence may appear in one pair, on one side, only")
