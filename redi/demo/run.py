"""``redi demo`` (``make demo``): the main job on the embedded default, end to end on CPU.

1. the built-in task (``OUT/data``): training rows, held-out problems and held-out pairs;
2. Stage 1: SFT of a tiny Qwen2 from scratch (``recipes/tiny_sft.yaml``);
3. Stage 2 from that checkpoint: REDI (``recipes/tiny_redi.yaml``), and with ``--compare``
   DPO and SimPO at their paper-analogue settings;
4. evaluation on the held-out split: pass@1 (k samples, temperature 0.6, with its standard
   error) and pass@k, plus the held-out length-normalized log-probs of the teacher's
   correct and incorrect traces; greedy accuracy at every Stage-2 checkpoint;
5. a table shaped like the paper's Table 2 (``OUT/results.md``, ``OUT/results.json``) and
   the Stage-2 curves (``OUT/stage2_curves.png``).

Every step skips what a previous run finished (trainers resume from their checkpoints,
evaluations from their samples), so rerunning the command picks up where it stopped.
With several seeds, the table gives the mean and the spread (sample std) over seeds.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

RECIPES = importlib.resources.files("redi.recipes")
METHODS = ("redi", "dpo", "simpo")


@dataclass(frozen=True)
class DemoSize:
    problems: int  # built-in task problems for training (4 teacher traces each)
    test: int  # held-out problems (and held-out pairs)
    sft_steps: int
    stage2_epochs: float
    samples: int  # k for the final evaluation
    curve_problems: int  # held-out problems for the greedy accuracy curve
    max_new_tokens: int = 160


FULL = DemoSize(problems=12000, test=400, sft_steps=500, stage2_epochs=1.0, samples=4,
                curve_problems=200)
QUICK = DemoSize(problems=400, test=24, sft_steps=6, stage2_epochs=1.0, samples=2,
                 curve_problems=8, max_new_tokens=48)


def _train(recipe: str, overrides: list[str]) -> Path:
    from redi.train.config import build_config
    from redi.train.loop import train

    return train(build_config(RECIPES / recipe, overrides))


def _export_curve_points(run: Path) -> list[tuple[int, Path]]:
    """Each Stage-2 checkpoint as a HF directory (exported once), by step."""
    from redi.train.checkpoint import list_checkpoints
    from redi.train.export import export_checkpoint

    points = []
    for checkpoint in list_checkpoints(run):
        step = int(checkpoint.name.split("_")[1])
        model_dir = run / "curve" / f"step_{step:08d}"
        if not (model_dir / "config.json").is_file():
            export_checkpoint(checkpoint, model_dir)
        points.append((step, model_dir))
    return points


def _accuracy(model_dir: Path, data: Path, out: Path, size: DemoSize, samples: int,
              temperature: float, limit: int | None) -> dict:
    from redi.eval.generation import SamplingSettings
    from redi.eval.runner import EvalOptions, evaluate

    options = EvalOptions(samples=samples, prompt_style="plain", batch_size=64, limit=limit,
                          sampling=SamplingSettings(temperature=temperature,
                                                    max_new_tokens=size.max_new_tokens))
    return evaluate(str(model_dir), str(data / "test.jsonl"), str(out), "builtin", options,
                    progress=False)


def run_seed(out: Path, data: Path, seed: int, methods: tuple[str, ...],
             size: DemoSize) -> dict:
    from redi.eval.logprobs import pair_logprob_margins

    root = out / f"seed{seed}"
    common = [f"data={data}", f"seed={seed}", "resume=auto", "progress=true"]
    sft = root / "sft"
    if not (sft / "final" / "config.json").is_file():
        _train("tiny_sft.yaml", [*common, f"output_dir={sft}", f"max_steps={size.sft_steps}"])
    models = {"sft": sft / "final"}
    for method in methods:
        run = root / method
        if not (run / "final" / "config.json").is_file():
            _train(f"tiny_{method}.yaml", [*common, f"output_dir={run}",
                                           f"init_from={sft / 'final'}",
                                           f"epochs={size.stage2_epochs}", "keep_last=1000"])
        models[method] = run / "final"
    rows = {}
    for name, model_dir in models.items():
        result = _accuracy(model_dir, data, root / "eval" / name, size, size.samples, 0.6,
                           None)
        margins = pair_logprob_margins(model_dir, data / "test_pairs.jsonl")
        rows[name] = {"pass@1": result["pass@1"], "pass@1_stderr": result["pass@1_stderr"],
                      f"pass@{size.samples}": result["pass@k"][str(size.samples)],
                      **{k: margins[k] for k in ("chosen_logps_avg", "rejected_logps_avg",
                                                 "margin")}}
    curves = {}
    start = _accuracy(models["sft"], data, root / "curve_eval" / "sft", size, 1, 0.0,
                      size.curve_problems)
    for method in methods:
        points = [(0, start["pass@1"])]
        for step, model_dir in _export_curve_points(root / method):
            result = _accuracy(model_dir, data, root / "curve_eval" / method / str(step),
                               size, 1, 0.0, size.curve_problems)
            points.append((step, result["pass@1"]))
        curves[method] = points
    return {"rows": rows, "curves": curves}


def _mean_spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def results_table(per_seed: dict[int, dict], samples: int) -> str:
    """Markdown table: per model, mean (spread over seeds) of each column, in percent for
    accuracies."""
    seeds = sorted(per_seed)
    names = {"sft": "SFT only", "redi": "REDI (alpha 0.8)", "dpo": "DPO", "simpo": "SimPO"}
    header = ["model", "held-out pass@1 %", f"pass@{samples} %", "chosen logp/tok",
              "rejected logp/tok", "margin"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in per_seed[seeds[0]]["rows"]:
        cells = [names[name]]
        for key, scale in (("pass@1", 100), (f"pass@{samples}", 100),
                           ("chosen_logps_avg", 1), ("rejected_logps_avg", 1), ("margin", 1)):
            mean, spread = _mean_spread([per_seed[s]["rows"][name][key] * scale for s in seeds])
            cells.append(f"{mean:.1f} ± {spread:.1f}" if scale == 100 else
                         f"{mean:.3f} ± {spread:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    stderr = {name: statistics.fmean(per_seed[s]["rows"][name]["pass@1_stderr"] * 100
                                     for s in seeds) for name in per_seed[seeds[0]]["rows"]}
    note = ", ".join(f"{names[n]} {v:.1f}" for n, v in stderr.items())
    return "\n".join(lines) + (f"\n\n{len(seeds)} seed(s): {seeds}; ± is the spread over seeds "
                               f"(0 with one seed). Mean standard error of pass@1 over the "
                               f"{samples} samples: {note}.")


def plot_curves(out: Path, per_seed: dict[int, dict], methods: tuple[str, ...]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = dict(zip(METHODS, ("tab:red", "tab:blue", "tab:green")))
    for seed, result in sorted(per_seed.items()):
        for method in methods:
            records = [json.loads(x) for x in
                       (out / f"seed{seed}" / method / "metrics.jsonl").open()]
            last = {r["step"]: r for r in records}
            steps = sorted(last)
            label = f"{method} seed {seed}"
            axes[0].plot(steps, [last[s]["loss"] for s in steps], color=colors[method],
                         label=label, alpha=0.8)
            axes[1].plot(steps, [last[s]["chosen_logps_avg"] for s in steps],
                         color=colors[method], label=f"{label} chosen")
            axes[1].plot(steps, [last[s]["rejected_logps_avg"] for s in steps],
                         color=colors[method], linestyle="--", label=f"{label} rejected")
            xs, ys = zip(*result["curves"][method])
            axes[2].plot(xs, [100 * y for y in ys], marker="o", color=colors[method],
                         label=label)
    titles = ("Stage-2 loss", "train log-prob per token (chosen —, rejected --)",
              "held-out greedy accuracy %")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("Stage-2 step")
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    path = out / "stage2_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(output: str | Path, seeds: list[int], compare: bool, size: DemoSize) -> dict:
    from transformers.utils import logging as hf_logging

    from redi.data.formatting import Formatter
    from redi.data.prepare import PrepareOptions, prepare_builtin_task
    from redi.data.tokenizer import load_tokenizer
    from redi.files import atomic_write_text

    hf_logging.disable_progress_bar()  # dozens of model loads and saves: keep the log readable
    out = Path(output)
    data = out / "data"
    if not (data / "stats.json").is_file():  # written last by prepare
        print(f"[demo] generating the built-in task ({size.problems} problems) in {data}")
        prepare_builtin_task(data, Formatter(load_tokenizer()), size.problems, size.test,
                             options=PrepareOptions(progress=False))
    methods = METHODS if compare else ("redi",)
    per_seed = {}
    for seed in seeds:
        print(f"[demo] seed {seed}: Stage 1 (SFT), Stage 2 ({', '.join(methods)}), evaluation")
        per_seed[seed] = run_seed(out, data, seed, methods, size)
    table = results_table(per_seed, size.samples)
    atomic_write_text(out / "results.md", table + "\n")
    atomic_write_text(out / "results.json", json.dumps(per_seed, indent=1))
    plot = plot_curves(out, per_seed, methods)
    print(f"\n{table}\n\nwrote {out / 'results.md'}, {out / 'results.json'}, {plot}")
    return per_seed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="redi demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/demo", help="the one output directory")
    parser.add_argument("--compare", action="store_true",
                        help="also train DPO and SimPO from the same SFT checkpoint")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds (0, 1, ...)")
    parser.add_argument("--quick", action="store_true",
                        help="a scaled-down run (seconds, not minutes): checks the pipeline")
    args = parser.parse_args(argv)
    run_demo(args.output, list(range(args.seeds)), args.compare,
             QUICK if args.quick else FULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
