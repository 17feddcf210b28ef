"""A length-grouped batch sampler: deterministic for a seed, resumable mid-epoch.

Each epoch: the items are shuffled (``numpy.random.default_rng([seed, epoch])``), cut into
groups of about ``group_batches`` batches, each group is sorted by length (longest first)
and cut into batches, either ``batch_size`` items or as many items as fit ``max_tokens``
(the sum of their lengths, for packed batches); then the batch order is shuffled.

``group_batches`` = 1 (the default) gives plain random batches. Larger groups give batches
of similar-length items, which saves padding in padded batches, but such batches are also
similar in content (on the built-in task, length follows the number of operands and
digits), and a tiny model trained on grouped batches learned far less than on random ones
(the figures: ``bench/results/cpu-2026-11-26/README.md``). Packed batches waste nothing on
padding, so they need no grouping.

With ``num_replicas`` > 1 the epoch's batches are dealt round-robin (rank r gets batches
r, r + W, ...; the last ``len % W`` are dropped), so W ranks that each take one batch see
the same global batch as one process taking W batches.

``state_dict()`` records the epoch and how many batches of it were handed out;
``load_state_dict()`` on a sampler over the same lengths continues with exactly the
remaining batches. The count is of batches the sampler yielded: with a DataLoader whose
workers prefetch, save ``{"epoch": e, "position": batches_consumed, ...}`` yourself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch


class LengthGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of item indices (see the module docstring).

    Args:
        lengths: per item, its token count (for a pair: chosen + rejected).
        batch_size: items per batch; or
        max_tokens: the most tokens (sum of lengths) per batch; exactly one of the two.
        seed: the shuffling seed.
        group_batches: batches per length-sorted group (1: no grouping).
        shuffle: False keeps the items in order (no grouping).
        drop_last: drop batches with fewer than batch_size items.
        num_replicas, rank: data-parallel world size and this process's rank.
    """

    def __init__(self, lengths: Sequence[int], *, batch_size: int | None = None,
                 max_tokens: int | None = None, seed: int = 0, group_batches: int = 1,
                 shuffle: bool = True, drop_last: bool = False, num_replicas: int = 1,
                 rank: int = 0):
        if (batch_size is None) == (max_tokens is None):
            raise ValueError("give exactly one of batch_size and max_tokens")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if max_tokens is not None and len(self.lengths) and self.lengths.max() > max_tokens:
            item = int(self.lengths.argmax())
            raise ValueError(f"item {item} has {self.lengths[item]} tokens, more than "
                             f"max_tokens={max_tokens}; truncate it or raise max_tokens")
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.seed, self.group_batches, self.shuffle = seed, group_batches, shuffle
        self.drop_last, self.num_replicas, self.rank = drop_last, num_replicas, rank
        self.fingerprint = hashlib.blake2b(self.lengths.tobytes(), digest_size=8).hexdigest()
        self.epoch, self.position = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def _split(self, items: np.ndarray) -> list[list[int]]:
        """Cut items (in order) into batches."""
        if self.batch_size is not None:
            return [items[i:i + self.batch_size].tolist()
                    for i in range(0, len(items), self.batch_size)]
        batches, current, tokens = [], [], 0
        for item in items.tolist():
            if current and tokens + self.lengths[item] > self.max_tokens:
                batches.append(current)
                current, tokens = [], 0
            current.append(item)
            tokens += self.lengths[item]
        return batches + ([current] if current else [])

    def _groups(self, order: np.ndarray) -> list[np.ndarray]:
        if self.batch_size is not None:
            size = self.batch_size * self.group_batches
            return [order[i:i + size] for i in range(0, len(order), size)]
        ends = np.cumsum(self.lengths[order]) // (self.max_tokens * self.group_batches)
        return [order[ends == g] for g in np.unique(ends)]

    def _epoch_batches(self) -> list[list[int]]:
        """All batches of the current epoch, this rank's share (cached)."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            order = rng.permutation(len(self.lengths))
            batches = []
            for group in self._groups(order):
                ranked = group[np.argsort(-self.lengths[group], kind="stable")]
                batches += self._split(ranked)
        else:
            batches = self._split(np.arange(len(self.lengths)))
        if self.drop_last and self.batch_size is not None:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = len(batches) - len(batches) % self.num_replicas
        batches = batches[self.rank:usable:self.num_replicas]
        self._cache = (self.epoch, batches)
        return batches

    def __len__(self) -> int:
        """Batches of this rank in the current epoch (handed out or not)."""
        return len(self._epoch_batches())

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` (from its start, unless it is already the current epoch)."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def __iter__(self) -> Iterator[list[int]]:
        if self.position >= len(self):  # the current epoch is used up: start the next one
            self.set_epoch(self.epoch + 1)
        batches = self._epoch_batches()
        while self.position < len(batches):
            self.position += 1
            yield batches[self.position - 1]

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "fingerprint": self.fingerprint, "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` was saved; the sampler must have the same lengths,
        seed and number of replicas, and the position must be one of that epoch's (a
        ValueError naming the key otherwise: the state comes from a file)."""
        for key in ("seed", "fingerprint", "num_replicas", "epoch", "position"):
            if key not in state:
                raise ValueError(f"sampler state has no {key!r}")
        for key in ("seed", "fingerprint", "num_replicas"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state does not match this sampler: {key} is "
                                 f"{state[key]!r} in the state, {getattr(self, key)!r} here")
        for key in ("epoch", "position"):
            value = state[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"sampler state: {key} is {value!r}, not a count")
        epoch, position = self.epoch, self.position
        self.epoch, self.position = state["epoch"], state["position"]
        if self.position > len(self):
            batches = len(self)
            self.epoch, self.position = epoch, position
            raise ValueError(f"sampler state: position {state['position']} is past the "
                             f"{batches} batches of epoch {state['epoch']}")
