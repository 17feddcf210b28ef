"""``redi plan`` against measured peak RSS of ``redi train`` on CPU, at four model sizes.

    python bench/plan_validation.py --out bench/results/cpu-2026-12-02

For each size: a random Qwen2 (tied embeddings, V=32000), pairs of random digits longer
than ``max_length`` (so every sequence is truncated to exactly ``max_length`` tokens, the
length the planner assumes), ``redi train`` (REDI, fp32, one process, 2 micro-batches of one
pair per step, 2 steps: the second step holds the optimizer state, the gradients accumulate
over its micro-batches). Measured: the process's peak resident set (VmHWM) that the trainer
logs after the last step (the final checkpoint and export come later and are not a training
step). Each case is measured twice, in separate processes: with glibc's default allocator
(freed heap blocks stay resident, so the high-water mark includes fragmentation the planner
does not model) and with ``MALLOC_MMAP_THRESHOLD_=65536`` (every block above 64 KiB is its own
mapping and leaves the resident set when freed, as ``bench/memory.py`` does for the step-level
bench), which is the figure the planner is checked against: its live tensors plus runtime.
Predicted: ``redi.train.plan.plan`` for the same config on ``cpu``. Writes
``plan-validation.json`` and ``plan-validation.md`` under ``--out``; exits 1 when a case's
allocator-controlled error exceeds 15 %.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from settings import ModelShape
from trainer_peers import prepare_pairs, write_model, write_pairs

# (shape, max_length): the runtime alone (a 30k-parameter model: checks the planner's
# CPU_RUNTIME_BYTES), then activation-, balanced- and weight-dominated
CASES = (
    (ModelShape(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, vocab=512), 128),
    (ModelShape(hidden=256, layers=2, heads=4, kv_heads=2, intermediate=768, vocab=32000), 2048),
    (ModelShape(hidden=512, layers=4, heads=8, kv_heads=2, intermediate=1408, vocab=32000), 1024),
    (ModelShape(hidden=1024, layers=4, heads=16, kv_heads=2, intermediate=2816, vocab=32000),
     256),
)
STEPS, MICRO, GLOBAL = 2, 1, 2
# measured column -> environment of the `redi train` process
ALLOCATORS = {"glibc_default": {}, "mmap_threshold_64k": {"MALLOC_MMAP_THRESHOLD_": "65536"}}
TOLERANCE = 0.15


def _overrides(data: Path, model: Path, out: Path, max_length: int) -> list[str]:
    return [f"data={data}", f"init_from={model}", f"output_dir={out}", "loss=redi",
            f"max_steps={STEPS}", f"global_batch_size={GLOBAL}", f"micro_batch_size={MICRO}",
            f"max_length={max_length}", "max_prompt_length=64", "dtype=fp32", "progress=false",
            "log_every=1", "save_every=0"]


def _measure(case: Path, shape: ModelShape, max_length: int) -> dict:
    from redi.train.config import build_config
    from redi.train.plan import model_facts, plan

    write_model(case / "model", shape, max_positions=max_length)
    write_pairs(case / "pairs.jsonl", GLOBAL * STEPS, 32, max_length)
    prepare_pairs(case / "pairs.jsonl", case / "data")
    measured = {name: _peak_rss(case / f"run-{name}", case, max_length, extra_env)
                for name, extra_env in ALLOCATORS.items()}
    config = build_config(None, _overrides(case / "data", case / "model", case / "run",
                                           max_length))
    facts = model_facts(config)
    predicted = plan(config, facts, nproc=1, device="cpu")
    return dict(hidden=shape.hidden, layers=shape.layers, intermediate=shape.intermediate,
                vocab=shape.vocab, params=facts.params, max_length=max_length,
                tokens_per_micro_batch=2 * MICRO * max_length, measured_bytes=measured,
                predicted_bytes=predicted.peak, parts=predicted.parts,
                error={name: predicted.peak / m - 1 for name, m in measured.items()})


def _peak_rss(run: Path, case: Path, max_length: int, extra_env: dict[str, str]) -> float:
    """Peak resident set (bytes) the trainer logs after the last step of one run."""
    overrides = _overrides(case / "data", case / "model", run, max_length)
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra_env)
    done = subprocess.run([sys.executable, "-m", "redi.cli", "train", *overrides], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"redi train failed: {done.stderr[-2000:]}")
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    return records[-1]["peak_mem_gb"] * 2**30


def _markdown(rows) -> str:
    lines = ["| model (H, L, I, V) | params | tokens/micro-batch | predicted | measured peak "
             "RSS, `MALLOC_MMAP_THRESHOLD_=65536` | error | measured, glibc default | error |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [f"{r['measured_bytes'][name] / 2**20:.0f} MiB | "
                 f"{100 * r['error'][name]:+.1f}%"
                 for name in ("mmap_threshold_64k", "glibc_default")]
        lines.append(f"| {r['hidden']}, {r['layers']}, {r['intermediate']}, {r['vocab']} | "
                     f"{r['params'] / 1e6:.1f}M | {r['tokens_per_micro_batch']} | "
                     f"{r['predicted_bytes'] / 2**20:.0f} MiB | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (shape, max_length) in enumerate(CASES):
            rows.append(_measure(Path(tmp) / str(i), shape, max_length))
            print(_markdown(rows[-1:]).splitlines()[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "plan-validation.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "plan-validation.md").write_text(_markdown(rows))
    print(_markdown(rows))
    return 0 if all(abs(r["error"]["mmap_threshold_64k"]) <= TOLERANCE for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
