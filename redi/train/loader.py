"""The trainer's data: tokenized set, resumable sampler, collator, and loss normalizers.

Stage 1 reads ``sft.jsonl``, Stage 2 ``pairs.jsonl``, from a ``redi prepare`` output
directory (``data=DIR``), or from the built-in task generated into ``output_dir/data``
(``data=builtin``). Each optimizer step takes ``accumulation`` micro-batches of
``micro_batch_size`` sequences (SFT) or pairs (Stage 2) per process; the sampler deals
batches round-robin over processes, so 1 process x N micro-batches and N processes x 1
micro-batch see the same global batch. An epoch holds whole steps only (a remainder of
fewer micro-batches than a step needs is skipped).
"""

from __future__ import annotations

import functools
import itertools
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from redi.data.batching import make_collator
from redi.data.formatting import IGNORE_INDEX, THINK_PREFIX, Formatter
from redi.data.io import read_rows
from redi.data.prepare import PrepareOptions, prepare_builtin_task
from redi.data.sampler import LengthGroupedBatchSampler
from redi.data.tokenized import content_digest, load_pairs, load_sft
from redi.data.tokenizer import check_round_trip, load_tokenizer, string_values
from redi.paired_sequences import PAIR_LAYOUT_KEYS
from redi.train.config import ConfigError, TrainConfig
from redi.train.distributed import Distributed, all_sum
from redi.train.model_spec import check_positions, check_vocabulary, hf_config, model_identity
from redi.train.modeling import flash_attn_available


def tokenizer_source(config: TrainConfig) -> str | None:
    if config.tokenizer:
        return config.tokenizer
    model_dir = config.init_from or config.model
    if model_dir and any(Path(model_dir, f).is_file() for f in ("tokenizer.json",
                                                                   "tokenizer_config.json")):
        return model_dir
    return None  # the built-in tokenizer


def make_formatter(config: TrainConfig, tokenizer) -> Formatter:
    """Stage 1 never cuts a prompt: a sequence over ``max_length`` loses its end (the
    paper's SFT limits only the whole sequence; its 800-token prompt limit is a filter of
    the pair set, ``redi prepare --max-prompt-tokens``). Stage 2 cuts the prompt to
    ``max_prompt_length`` and the whole keeping its end, as the paper's Stage 2 does."""
    if config.loss == "sft":
        return Formatter(tokenizer, max_length=config.max_length, truncation="keep_start")
    return Formatter(tokenizer, max_length=config.max_length,
                     max_prompt_length=config.max_prompt_length or None)


def prepared_file(config: TrainConfig, run_dir: str | Path) -> Path:
    """The prepared file a run trains on: ``data=DIR``'s, or the built-in task's in the
    run's own directory."""
    directory = Path(run_dir) / "data" if config.data == "builtin" else Path(config.data)
    return directory / ("sft.jsonl" if config.loss == "sft" else "pairs.jsonl")


def training_prompt(path: Path) -> dict:
    """How the data words a problem (as is: ``redi prepare`` writes the problem text) and
    whether its traces start with ``<think>`` (read from the first row)."""
    first = next((r for r in read_rows(path) if not isinstance(r, Exception)), None)
    messages = [] if first is None else (first.data.get("messages") or
                                         first.data.get("chosen") or [])
    answer = messages[-1].get("content", "") if messages else ""
    return {"prompt_style": "plain", "think": str(answer).startswith(THINK_PREFIX.strip())}


def _first_texts(path: Path, rows: int = 4) -> list[str]:
    """The message texts of the first rows of a prepared file (for ``check_round_trip``)."""
    texts = []
    with path.open() as f:
        for line in itertools.islice(f, rows):
            try:
                texts += string_values(json.loads(line))
            except ValueError:  # the loader names bad rows
                break
    return texts


def use_packing(config: TrainConfig) -> bool:
    if config.packing == "auto":
        return flash_attn_available() and config.attn_implementation in ("auto",
                                                                         "flash_attention_2")
    return config.packing is True


class TrainData:
    def __init__(self, config: TrainConfig, env: Distributed):
        self.config, self.env = config, env
        self.kind = "sft" if config.loss == "sft" else "pairs"
        self.tokenizer = load_tokenizer(tokenizer_source(config))
        model_config = hf_config(config)  # model_config / model_overrides errors come first
        check_vocabulary(model_config, self.tokenizer)
        formatter = make_formatter(config, self.tokenizer)
        self._prepare_builtin(formatter)
        path = prepared_file(config, config.output_dir)
        if not path.is_file():
            raise ConfigError(f"data={config.data}: {path} does not exist (run `redi prepare`)")
        self.path = path
        check_round_trip(self.tokenizer, _first_texts(path))
        self.dataset = (load_sft if self.kind == "sft" else load_pairs)(path, formatter)
        check_positions(model_config, formatter.longest)
        if formatter.cut_sequences and env.is_main:
            total = len(self.dataset) * (1 if self.kind == "sft" else 2)
            prompt = (f"with a prompt over max_prompt_length={config.max_prompt_length} or "
                      if config.max_prompt_length else "")
            what = (f"longer than max_length={config.max_length}: their ends were cut, the "
                    "prompts kept whole" if self.kind == "sft" else
                    f"{prompt}longer than max_length={config.max_length}: cut keeping their "
                    "ends")
            lost = (f" ({formatter.untrained} of them kept no trained token)"
                    if formatter.untrained else "")
            print(f"redi: {formatter.cut_sequences} of {total} {self.kind} sequences were "
                  f"{what}{lost}", file=sys.stderr)
        self.training_prompt = training_prompt(path)
        self.accumulation = (config.global_batch_size
                             // (config.micro_batch_size * env.world_size))  # fit_micro_batch
        self.sampler = self._new_sampler()
        if len(self.sampler) < self.accumulation:
            raise ConfigError(
                f"{len(self.dataset)} {self.kind} examples make fewer than one step of "
                f"global_batch_size={config.global_batch_size}")
        self.packed = use_packing(config)
        self.collate = make_collator(self.kind, self.tokenizer.pad_token_id, self.packed)
        self._batches = None

    def _new_sampler(self) -> LengthGroupedBatchSampler:
        return LengthGroupedBatchSampler(
            self.dataset["length"], batch_size=self.config.micro_batch_size,
            seed=self.config.seed, drop_last=True, num_replicas=self.env.world_size,
            rank=self.env.rank)

    def _prepare_builtin(self, formatter: Formatter) -> None:
        if self.config.data != "builtin":
            return
        directory = prepared_file(self.config, self.config.output_dir).parent
        if self.env.is_main and not (directory / "pairs.jsonl").is_file():
            # sizes: redi.data.builtin_task.DEFAULT_PROBLEMS / DEFAULT_TEST
            prepare_builtin_task(directory, formatter, options=PrepareOptions(progress=False))
        dist.barrier()

    @functools.cached_property
    def model_identity(self) -> str:
        """The starting model's ``model_identity`` (its files read once, on first use)."""
        return model_identity(self.config)

    @functools.cached_property
    def fingerprint(self) -> str:
        """What the DPO reference cache depends on, by content, never by path: the
        tokenized pairs (tokenizer and length limits included), the reference model and
        the dtype (computed once, on first use)."""
        return ":".join((content_digest(self.dataset), self.model_identity,
                         self.config.dtype))

    @property
    def num_examples(self) -> int:
        return len(self.dataset)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler) // self.accumulation

    def _batch(self, indices: list[int]) -> dict:
        batch = self.collate([self.dataset[i] for i in indices])
        batch["num_targets"] = int((batch["labels"] != IGNORE_INDEX).sum())  # on the CPU
        if "attention_mask" in batch:
            batch["num_tokens"] = int(batch["attention_mask"].sum())
        else:
            batch["num_tokens"] = batch["input_ids"].numel()
        return {k: v.to(self.env.device) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def _step_indices(self, sampler, batches):
        """The item indices of the next step's micro-batches from ``sampler`` (and the
        iterator over its epoch, renewed at an epoch's end)."""
        if len(sampler) - sampler.position < self.accumulation:
            sampler.set_epoch(sampler.epoch + 1)
            batches = None
        if batches is None:
            batches = iter(sampler)
        return [next(batches) for _ in range(self.accumulation)], batches

    def next_step(self) -> list[dict]:
        """This process's micro-batches for the next optimizer step."""
        indices, self._batches = self._step_indices(self.sampler, self._batches)
        return [self._batch(i) for i in indices]

    def items_used(self, total_steps: int) -> torch.Tensor:
        """Sorted indices of the items that steps 1..total_steps use on any process (the
        sampler's order replayed on a copy; collective)."""
        sampler, batches, used = self._new_sampler(), None, set()
        for _ in range(total_steps):
            indices, batches = self._step_indices(sampler, batches)
            used.update(i for batch in indices for i in batch)
        mask = torch.zeros(self.num_examples, device=self.env.device)
        mask[sorted(used)] = 1.0
        torch.distributed.all_reduce(mask)
        return mask.nonzero().squeeze(1).cpu()

    def loss_normalizer(self, micro_batches: list[dict]) -> dict:
        """The step's global count (completion tokens, or pairs) over the process count:
        each process divides by it and FSDP averages the gradients over processes."""
        if self.kind == "sft":
            local = sum(b["num_targets"] for b in micro_batches)
            key = "num_tokens"
        else:
            local = sum(len(b["index"]) for b in micro_batches)
            key = "num_pairs"
        total = all_sum(local, self.env.device).item()
        return {key: max(total, 1.0) / self.env.world_size}

    def loss_kwargs(self, batch: dict, normalizer: dict) -> dict:
        layout = PAIR_LAYOUT_KEYS if self.kind == "pairs" else ()
        return {k: batch[k] for k in layout if k in batch} | normalizer

    def reference_batches(self, items: torch.Tensor):
        """Each of ``items`` once over all processes (this process: every W-th from its
        rank), in micro-batches, for the DPO reference cache."""
        mine = items[self.env.rank::self.env.world_size].tolist()
        size = self.config.micro_batch_size
        for start in range(0, len(mine), size):
            yield self._batch(mine[start:start + size])

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict):
        self.sampler.load_state_dict(state)
        self._batches = None
