"""Trainer level: Stage-2 throughput of redi's own FSDP2 trainer (``redi train``).

REDI vs DPO with an online reference (a frozen copy run every step) vs DPO with a cached
reference (scored once before training) vs SimPO, each a real ``redi train`` run of
``trainer_steps`` optimizer steps on the built-in task, from the same randomly initialized
Qwen2 of the settings' ``model`` shape (its vocabulary is larger than the built-in
tokenizer's; the head costs what that shape costs). Tokens/s is the median over the steps
after the first two (warm-up); memory is the process's peak resident set (CPU) or the CUDA
allocator's peak, as the trainer logs it. One process; the same data and batch for all.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from report import Column, Section, add_ratios
from settings import Settings

VARIANTS = (("redi", ["loss=redi"]), ("dpo (ref online)", ["loss=dpo", "reference=online"]),
            ("dpo (ref cached)", ["loss=dpo", "reference=cached"]),
            ("simpo", ["loss=simpo"]))


def _initial_model(directory: Path, settings: Settings):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from redi.data.tokenizer import load_tokenizer

    shape = settings.model
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=shape.vocab, hidden_size=shape.hidden,
                         intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
                         num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                         max_position_embeddings=1024, tie_word_embeddings=False)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    load_tokenizer().save_pretrained(directory)


def _run(label, extra, data, init, out, settings: Settings) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if settings.threads:
        env["OMP_NUM_THREADS"] = str(settings.threads)
    args = [sys.executable, "-m", "redi.cli", "train", *extra, f"data={data}",
            f"init_from={init}", f"output_dir={out}", f"max_steps={settings.trainer_steps}",
            f"global_batch_size={settings.trainer_pairs}",
            f"micro_batch_size={settings.trainer_pairs}", "lr=1e-6", "beta=0.1",
            "progress=false", "log_every=1", "save_every=0", "max_length=256",
            "dtype=" + ("bf16" if settings.device == "cuda" else "fp32")]
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"redi train ({label}) failed:\n{result.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    timed = records[2:] or records
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in timed)
    tokens = statistics.median(r["tokens"] for r in timed)
    return dict(section="trainer", loss=label, impl="redi train", status="ok",
                tokens=tokens, time_s=tokens / tokens_per_s, tokens_per_s=tokens_per_s,
                peak_bytes=max(r["peak_mem_gb"] for r in records) * 2**30,
                pairs=settings.trainer_pairs, steps=settings.trainer_steps)


def run_trainer(settings: Settings) -> list[dict]:
    from redi.data.formatting import Formatter
    from redi.data.prepare import PrepareOptions, prepare_builtin_task
    from redi.data.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_builtin_task(tmp / "data", Formatter(load_tokenizer()),
                             settings.trainer_pairs * (settings.trainer_steps + 2) * 3, 8,
                             options=PrepareOptions(progress=False))
        _initial_model(tmp / "init", settings)
        rows = [_run(label, extra, tmp / "data", tmp / "init", tmp / label.split()[0] /
                     str(i), settings) for i, (label, extra) in enumerate(VARIANTS)]
    add_ratios(rows, "redi", lambda r: r["loss"] == "redi", match=("impl",),
               keys=("time_s",))
    return rows


SECTION = Section(
    name="trainer",
    describe=lambda s: (f"redi train, Stage 2, {s.trainer_pairs} pairs/step, "
                        f"{s.trainer_steps} steps, Qwen2 H={s.model.hidden} "
                        f"L={s.model.layers} V={s.model.vocab}, built-in task"),
    run=run_trainer,
    columns=(Column("loss", "loss", left=True), Column("tokens/step", "tokens", "{:.0f}"),
             Column("tokens/s", "tokens_per_s", "{:.0f}"),
             Column("time x REDI", "time_s_vs_redi", "{:.2f}"),
             Column("peak MiB", "peak_bytes", "{:.0f}", scale=2**-20)),
    plotted=False)
