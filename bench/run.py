"""Memory and throughput of REDI vs DPO vs SimPO, and vs the peers.

    python bench/run.py                  # full run on the detected device (CUDA if present)
    python bench/run.py --quick --out /tmp/bench   # <= 2 minutes on 2 CPU cores (CI smoke)
    python bench/run.py --sections loss --tokens 1024 4096 --repeats 5
    python bench/run.py --sections loss --tokens 8192 --seq-len 8192 --hidden 256

Sections (``SECTIONS``; run in the order given):

* ``loss``: fwd+bwd of head + loss over a sweep of token counts (``loss_level``).
* ``step``: Stage-2 training steps of a small Qwen2, REDI vs DPO (online and cached
  reference) vs SimPO, ours vs naive (``step_level``).
* ``max-seq``: longest sequence whose REDI step fits a memory budget, naive vs ours.
* ``trainer``: Stage-2 tokens/s of ``redi train`` itself, REDI vs DPO (online and cached
  reference) vs SimPO (``trainer_level``).
* ``head``: the Qwen2.5-Math-1.5B head (H=1536, V=151936): longest REDI pair within a
  memory budget and time per token, ours vs naive and the peers (``real_head``); run only
  when named in ``--sections`` (or with ``--quick``): an hour or more on a CPU.
* ``head-time`` (only when named): the ``head`` section's time per token alone, ours vs
  naive vs Cut Cross-Entropy vs the 3-matmul floor, without the memory search (minutes).
* ``trainer-peers`` (only when named in ``--sections``; ~20 min on 2 CPU cores): ``redi
  train`` vs TRL's DPOTrainer (with and without Liger) and CPOTrainer (SimPO) on the same
  model, pairs and steps, one process per trainer (``trainer_peers``).
* ``real-scale`` (only when named; hours on 2 CPU cores, minutes with ``--quick``): the
  paper's model shapes with random weights, the planner against measured peak RSS,
  checkpoint, resume and export, TRL's trainers, the longest pair within 20 GiB
  (``real_scale``).

Shapes and sizes per device and for ``--quick``: ``settings.py``. Writes a table per section
to stdout and ``<out>/<device>-<date>[-quick].json`` / ``.csv`` (rows + environment; ``<out>``
is ``runs/bench/`` unless ``--out`` says otherwise) and
``<stem>-<section>-{time,memory}.png`` for the swept sections (and ``<stem>-<section>.md``
for a section with a markdown report); the files are rewritten after
every section, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import loss_level
import real_head
import real_scale
import step_level
import torch
import trainer_level
import trainer_peers
from environment import device_slug, environment
from plots import plot_against_tokens
from report import table, write_csv, write_json
from settings import MODEL_SHAPES, MiB, profile

SECTIONS = {s.name: s for s in (loss_level.SECTION, step_level.STEP_SECTION,
                                step_level.MAX_SEQ_SECTION, trainer_level.SECTION,
                                real_head.SECTION, real_head.TIME_SECTION,
                                trainer_peers.SECTION, real_scale.SECTION)}
# A run directory outside the source tree (ignored by git); committed results go under
# bench/results/<device>-<date>/ only when asked for with --out.
FULL_WHEN_NAMED = ("head",)  # its full-size run only when named: an hour or more on a CPU
# trainer-peers: ~20 min on 2 CPU cores, also with --quick; head-time: what head measures too;
# real-scale: hours
ONLY_WHEN_NAMED = (trainer_peers.SECTION.name, real_head.TIME_SECTION.name,
                   real_scale.SECTION.name)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "runs" / "bench"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes, <= 2 min on 2 CPU cores")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="default: cuda if available, else cpu")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--sections", nargs="+", choices=list(SECTIONS),
                   help=f"default: all but {', '.join(ONLY_WHEN_NAMED)}, and without "
                        f"--quick also all but {', '.join(FULL_WHEN_NAMED)}")
    p.add_argument("--repeats", type=int, help="timed calls per case (median reported)")
    p.add_argument("--tokens", type=int, nargs="+", help="loss-level token counts")
    p.add_argument("--seq-len", type=int, help="loss-level tokens per sequence (pairs of two)")
    p.add_argument("--hidden", type=int, help="loss-level hidden size H")
    p.add_argument("--vocab", type=int, help="loss-level vocabulary size V")
    p.add_argument("--liger-compiled", action=argparse.BooleanOptionalAction,
                   help="also run Liger with torch.compile (default: on, off with --quick)")
    p.add_argument("--budget-mib", type=float, help="max-seq memory budget in MiB")
    p.add_argument("--model", choices=list(MODEL_SHAPES),
                   help="step/max-seq/trainer model shape (default: the profile's)")
    p.add_argument("--step-pairs", type=int, help="pairs per step-level batch")
    p.add_argument("--step-seq-lens", type=int, nargs="+", help="step-level sequence lengths")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: one with --quick, else torch's, one per "
                        "core); 1 keeps a run on a machine shared with other jobs from "
                        "fighting them for cores")
    return p.parse_args(argv)


def _settings(args):
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = profile("quick" if args.quick else "full", device)
    overrides = {}
    if args.repeats is not None:
        overrides["repeats"] = args.repeats
    if args.tokens:
        overrides["tokens"] = tuple(args.tokens)
    for key in ("seq_len", "hidden", "vocab"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.liger_compiled is not None:
        overrides["liger_compiled"] = (False, True) if args.liger_compiled else (False,)
    if args.model:
        overrides["model"] = MODEL_SHAPES[args.model]
    if args.step_pairs is not None:
        overrides["step_pairs"] = args.step_pairs
    if args.step_seq_lens:
        overrides["step_seq_lens"] = tuple(args.step_seq_lens)
    if args.budget_mib is not None:
        overrides["budget_bytes"] = int(args.budget_mib * MiB)
    if args.threads is not None:
        overrides["threads"] = args.threads
    return settings.replace(**overrides)


def _plots(section, rows, stem):
    title = f"{section.name}: {stem.name}"
    return [plot_against_tokens(rows, "time_s", 1e3, "time (ms)", title,
                                stem.with_name(f"{stem.name}-{section.name}-time.png")),
            plot_against_tokens(rows, "peak_bytes", 2**-20, "peak extra memory (MiB)", title,
                                stem.with_name(f"{stem.name}-{section.name}-memory.png"))]


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = _settings(args)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    env = environment(settings.device)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if settings.profile == "quick" else ""
    stem = args.out / f"{device_slug(settings.device)}-{datetime.date.today()}{suffix}"
    print(f"# {env['device']} ({env['cpu']}, {env['torch_threads']} threads, load average "
          f"{env['load_average'][0]:.2f}), torch {env['torch']}, commit {env['commit']}"
          f"{' (dirty)' if env['dirty'] else ''}", flush=True)
    rows, files = [], []
    sections = args.sections or [n for n in SECTIONS if n not in ONLY_WHEN_NAMED and (
        settings.profile == "quick" or n not in FULL_WHEN_NAMED)]
    for name in sections:
        section = SECTIONS[name]
        start = time.perf_counter()
        section_rows = section.run(settings)
        rows += section_rows
        print(f"\n{table(section, settings, section_rows)}\n"
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        if section.plotted:
            files += _plots(section, section_rows, stem)
        if section.markdown is not None:
            files.append(stem.with_name(f"{stem.name}-{section.name}.md"))
            files[-1].write_text(section.markdown(settings, section_rows, env))
        env["load_average_after"] = os.getloadavg()
        write_json(stem.with_suffix(".json"), env, settings, rows)
        write_csv(stem.with_suffix(".csv"), env, rows)
    print("\nwrote", *[stem.with_suffix(".json"), stem.with_suffix(".csv"), *files],
          sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
