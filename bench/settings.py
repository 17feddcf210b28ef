"""What a benchmark run measures: one ``Settings`` per profile (cpu, cuda, quick).

Loss level. CUDA runs the Qwen2.5-1.5B head (H=1536, V=151936) in bf16 over 1k..32k tokens.
CPU runs a scaled head, H=512, V=32000 in fp32 (the shape of the token-level
microbenchmark): at the real shape one naive fwd+bwd of 8k tokens takes minutes on two cores.
Batches are pairs of ``seq_len``-token sequences (the first 1/8 a prompt), so a sweep point
of N tokens is N / (2 seq_len) pairs and Liger's one-pair chunks hold ``2 seq_len`` rows.

Step level. A small Qwen2 (``ModelShape``) trained one Stage-2 step at a time on
``step_pairs`` pairs of each length in ``step_seq_lens``; then the longest sequence (one
pair) whose step fits ``budget_bytes`` of peak extra memory, searched from ``search_start``
by doubling and bisection down to ``search_resolution`` tokens, up to ``search_limit``.

Trainer level. ``trainer_steps`` optimizer steps of ``redi train`` itself, ``trainer_pairs``
pairs each, for every Stage-2 loss, from a random Qwen2 of the ``model`` shape.

``quick`` shrinks everything so the whole run takes well under two minutes on two CPU cores
(it is the CI smoke test); it leaves out Liger's compiled path, whose first call compiles
for tens of seconds on CPU, and runs one torch thread: its timings are not results, and on a
machine shared with other jobs two threads fighting them for two cores made it 6x slower
(2.5 minutes instead of about 20 s).
"""

from __future__ import annotations

import dataclasses

import torch

GiB, MiB = 2**30, 2**20


@dataclasses.dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int


# Model shapes a run can ask for by name (``run.py --model``), e.g. the real student's.
MODEL_SHAPES = {
    "qwen2.5-1.5b": ModelShape(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960,
                               vocab=151936),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    profile: str
    device: str
    dtype: torch.dtype
    repeats: int
    warmup: int
    threads: int | None  # torch CPU threads; None: torch's default (one per core)
    # loss level
    hidden: int
    vocab: int
    seq_len: int
    tokens: tuple[int, ...]
    backends: tuple[str, ...]
    liger_compiled: tuple[bool, ...]
    # step level
    model: ModelShape
    step_pairs: int
    step_seq_lens: tuple[int, ...]
    budget_bytes: int
    search_start: int
    search_resolution: int
    search_limit: int
    # trainer level (redi train)
    trainer_steps: int
    trainer_pairs: int

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)


def _device_defaults(device: str) -> dict:
    if device == "cuda":
        return dict(device="cuda", dtype=torch.bfloat16, backends=("triton", "torch"))
    return dict(device="cpu", dtype=torch.float32, backends=("torch",))


def profile(name: str, device: str) -> Settings:
    """The settings of profile ``name`` ("full" or "quick") on ``device`` ("cpu" or "cuda")."""
    base = _device_defaults(device)
    if name == "quick":
        return Settings(
            profile="quick", **base, repeats=2, warmup=1, threads=1,
            hidden=128, vocab=4096, seq_len=128, tokens=(512, 1024), liger_compiled=(False,),
            model=ModelShape(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128,
                             vocab=4096),
            step_pairs=1, step_seq_lens=(128,), budget_bytes=64 * MiB,
            search_start=128, search_resolution=128, search_limit=8192,
            trainer_steps=3, trainer_pairs=2)
    if device == "cuda":
        return Settings(
            profile="full", **base, repeats=10, warmup=2, threads=None,
            hidden=1536, vocab=151936, seq_len=512,
            tokens=(1024, 2048, 4096, 8192, 16384, 32768), liger_compiled=(False, True),
            model=ModelShape(hidden=896, layers=4, heads=14, kv_heads=2, intermediate=4864,
                             vocab=151936),
            step_pairs=4, step_seq_lens=(1024, 2048), budget_bytes=16 * GiB,
            search_start=1024, search_resolution=512, search_limit=262144,
            trainer_steps=12, trainer_pairs=32)
    return Settings(
        profile="full", **base, repeats=3, warmup=1, threads=None,
        hidden=512, vocab=32000, seq_len=512, tokens=(1024, 2048, 4096, 8192),
        liger_compiled=(False, True),
        model=ModelShape(hidden=256, layers=2, heads=4, kv_heads=2, intermediate=768,
                         vocab=32000),
        step_pairs=2, step_seq_lens=(256, 512), budget_bytes=1 * GiB,
        search_start=256, search_resolution=128, search_limit=32768,
        trainer_steps=8, trainer_pairs=8)
