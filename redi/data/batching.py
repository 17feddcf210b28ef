"""Collators: padded and packed (padding-free) batches of SFT examples and pairs.

Inputs are tokenized examples (``tokenized.py``): SFT examples with ``input_ids`` and
``labels`` (labels already shifted, -100 where nothing is predicted), pairs with
``chosen_input_ids``, ``chosen_labels``, ``rejected_input_ids``, ``rejected_labels``.

Padded batches (right padding): ``input_ids`` (pad id), ``labels`` (-100),
``attention_mask`` (1 on tokens), ``position_ids`` (0.. per row, 0 on padding), all
``[B, T]``; for pairs ``[2B, T]``, the B chosen rows first, then the B rejected rows.

Packed batches: the sequences concatenated into one row: ``input_ids``, ``labels``,
``position_ids`` (restarting at 0 per sequence), all ``[1, N]``; ``cu_seqlens`` (int32,
``[S + 1]``, sequence boundaries as flash-attn's varlen kernels take them) and
``seq_index`` (``[N]``, the sequence each token belongs to). For pairs the 2B sequences are
the B chosen then the B rejected, and ``chosen_index`` / ``rejected_index`` (``[B]``) give
each pair's two sequence ids. Labels never cross a boundary because every sequence's last
label is -100.

Examples that carry an ``index`` (tokenized datasets do) give the batch an ``index``
tensor ``[B]`` (one per example or pair, in batch order).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import partial

import torch

from redi.data.formatting import IGNORE_INDEX

Sequences = Sequence[tuple[Sequence[int], Sequence[int]]]  # (input_ids, labels) pairs


def pad_sequences(sequences: Sequences, pad_token_id: int,
                  pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded [S, T] batch of (input_ids, labels) sequences."""
    lengths = [len(ids) for ids, _ in sequences]
    width = max(lengths)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.arange(width).expand(len(sequences), width)
    attention_mask = (positions < torch.tensor(lengths)[:, None]).long()
    for row, (ids, labs) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
            "position_ids": positions * attention_mask}


def _concat(lists) -> torch.Tensor:
    return torch.tensor(list(itertools.chain.from_iterable(lists)), dtype=torch.long)


def pack_sequences(sequences: Sequences) -> dict[str, torch.Tensor]:
    """One [1, N] row holding every sequence, with its boundaries (see module docstring)."""
    lengths = torch.tensor([len(ids) for ids, _ in sequences])
    starts = torch.cumsum(lengths, 0) - lengths
    seq_index = torch.repeat_interleave(torch.arange(len(sequences)), lengths)
    position_ids = torch.arange(int(lengths.sum())) - starts[seq_index]
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.int32),
                            torch.cumsum(lengths, 0).to(torch.int32)])
    return {"input_ids": _concat(ids for ids, _ in sequences)[None],
            "labels": _concat(labels for _, labels in sequences)[None],
            "position_ids": position_ids[None], "cu_seqlens": cu_seqlens, "seq_index": seq_index}


def _index(examples: Sequence[dict]) -> dict[str, torch.Tensor]:
    if "index" not in examples[0]:
        return {}
    return {"index": torch.tensor([e["index"] for e in examples], dtype=torch.long)}


def collate_sft(examples: Sequence[dict], pad_token_id: int, packed: bool = False,
                pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """A padded or packed batch of SFT examples."""
    sequences = [(e["input_ids"], e["labels"]) for e in examples]
    batch = pack_sequences(sequences) if packed else pad_sequences(
        sequences, pad_token_id, pad_to_multiple_of)
    return batch | _index(examples)


def collate_pairs(examples: Sequence[dict], pad_token_id: int, packed: bool = False,
                  pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """A padded [2B, T] or packed batch of pairs, chosen sequences first."""
    sequences = [(e[f"{side}_input_ids"], e[f"{side}_labels"])
                 for side in ("chosen", "rejected") for e in examples]
    if not packed:
        return pad_sequences(sequences, pad_token_id, pad_to_multiple_of) | _index(examples)
    count = len(examples)
    return pack_sequences(sequences) | _index(examples) | {
        "chosen_index": torch.arange(count), "rejected_index": torch.arange(count, 2 * count)}


def make_collator(kind: str, pad_token_id: int, packed: bool = False,
                  pad_to_multiple_of: int | None = None) -> Callable[[Sequence[dict]], dict]:
    """A DataLoader ``collate_fn`` for ``kind`` "sft" or "pairs"."""
    collate = {"sft": collate_sft, "pairs": collate_pairs}[kind]
    return partial(collate, pad_token_id=pad_token_id, packed=packed,
                   pad_to_multiple_of=pad_to_multiple_of)
