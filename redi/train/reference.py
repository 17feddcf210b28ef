"""DPO's reference: summed log-probs of each pair's chosen and rejected completion under the
frozen Stage-1 model. REDI and SimPO need none.

* ``online``: a frozen, FSDP2-sharded copy of the Stage-1 model runs a no-grad forward on
  every batch (one more forward per step).
* ``cached``: the same forward, run once before training over the pairs the run will use
  (all of them, or the first ``max_steps`` steps' worth), with a progress bar; the
  ``[pairs, 2]`` table (NaN for pairs not computed) is saved to
  ``output_dir/reference_logps.safetensors`` with a fingerprint of the tokenized pairs and
  of the reference model's files (``TrainData.fingerprint``: contents, never paths, so
  changed data or a model retrained to the same path is never served stale numbers, and
  a copy of the cache serves the same data anywhere) and looked up by each batch's
  ``index``. A cache that lacks a pair the run needs is rebuilt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from redi.files import atomic_path
from redi.pair_logprob_sums import pair_logprobs
from redi.paired_sequences import PAIR_LAYOUT_KEYS

CACHE_FILE = "reference_logps.safetensors"


def _layout(batch) -> dict:
    return {k: batch[k] for k in PAIR_LAYOUT_KEYS if batch.get(k) is not None}


class OnlineReference:
    def __init__(self, ref_model, backend: str):
        self.model, self.backend = ref_model, backend

    @torch.no_grad()
    def __call__(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(batch, pair_logprobs, backend=self.backend, **_layout(batch))


class CachedReference:
    def __init__(self, table: torch.Tensor):
        self.table = table  # [pairs, 2] float32: chosen, rejected

    def __call__(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        index = batch["index"]
        if self.table.device != index.device:
            self.table = self.table.to(index.device)  # once: pairs x 2 floats
        rows = self.table[index]
        return rows[:, 0], rows[:, 1]

    @classmethod
    def load(cls, output_dir, fingerprint: str, needed: torch.Tensor,
             num_pairs: int) -> CachedReference | None:
        """The cache of ``output_dir`` if it was built for ``fingerprint`` and holds the
        pairs ``needed`` (of ``num_pairs``), else None: to be rebuilt. A damaged cache
        (truncated, without its table, or of another size) is rebuilt with a warning."""
        path = Path(output_dir) / CACHE_FILE
        if not path.is_file():
            return None
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                if (f.metadata() or {}).get("fingerprint") != fingerprint:
                    return None
                table = f.get_tensor("logps")
            problem = (None if table.shape == (num_pairs, 2) and table.is_floating_point()
                       else f"holds a {tuple(table.shape)} {table.dtype} table, not "
                            f"({num_pairs}, 2) floats")
        except (SafetensorError, OSError) as err:
            problem = f"is unreadable ({err})"
        if problem is not None:
            if dist.get_rank() == 0:
                print(f"redi: warning: {path} {problem}; it is rebuilt", file=sys.stderr)
            return None
        return cls(table) if bool(torch.isfinite(table[needed]).all()) else None

    @classmethod
    def build(cls, output_dir, fingerprint: str, num_pairs: int, online: OnlineReference,
              batches, needed: torch.Tensor, device, is_main: bool,
              progress: bool = True) -> CachedReference:
        """Run the reference over ``batches`` (this rank's share of the pairs ``needed``,
        each with ``index``), gather the table on every rank and write it."""
        from tqdm import tqdm

        path = Path(output_dir) / CACHE_FILE
        table = torch.zeros(num_pairs, 2, dtype=torch.float64, device=device)
        with tqdm(total=len(needed), desc="DPO reference", unit="pair",
                  disable=not (is_main and progress)) as bar:
            for batch in batches:
                chosen, rejected = online(batch)
                index = batch["index"].to(device)
                table[index, 0] = chosen.double()
                table[index, 1] = rejected.double()
                bar.update(len(index) * dist.get_world_size())
        dist.all_reduce(table)  # every needed pair was computed by exactly one rank
        table = table.float().cpu()
        unused = torch.ones(num_pairs, dtype=torch.bool)
        unused[needed] = False
        table[unused] = float("nan")
        if is_main:
            with atomic_path(path) as tmp:
                save_file({"logps": table}, str(tmp), metadata={"fingerprint": fingerprint})
        dist.barrier()
        return cls(table)
