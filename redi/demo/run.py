"""``redi demo`` (``make demo``): does Stage 2 on (correct, incorrect) teacher traces add
accuracy beyond more SFT on the correct traces? The paper's claim, tested at toy scale.

1. Data (``OUT/data``): the built-in task (``--task teacher``, the default: a small teacher
   model's own samples, verified; ``--task slips``: correct traces with injected slips, the
   contrast case), with disjoint train, validation and test problems.
2. Stage 1, per seed: SFT of a tiny Qwen2 from scratch on the correct traces
   (``recipes/tiny_sft.yaml``) for ``stage1_epochs``; validation greedy accuracy at evenly
   spaced checkpoints; Stage 1 has plateaued when accuracy no longer improves beyond noise
   (``plateau``; the rule's verdict is written to results).
3. Stage 2, from that one checkpoint: ``sft_continued`` (REDI with alpha 0: SFT on the
   pairs' correct traces, same pairs, steps and batch), ``redi`` (alpha 0.8), and with
   ``--compare`` ``redi_symmetric`` (alpha 1), ``dpo``, ``simpo``; recipes
   ``recipes/tiny_<method>.yaml``.
4. Learning rates: ``--full`` (or ``--sweep``) trains every Stage-2 method at every value of
   a fixed grid and picks, per method, the value with the best mean validation greedy
   accuracy of the final model over seeds (ties: the smaller rate). The rule was fixed
   before any test figure was seen; the test split is only used for the final table.
   Without a sweep, the rates committed in the recipes (the last sweep's choice) are used.
5. Test: pass@1 over k samples (temperature 0.6) with its standard error over problems,
   per seed and mean (spread over seeds); the headline is the paired difference REDI minus
   continued SFT (``redi.demo.stats``); curves: validation greedy accuracy at each Stage-2
   checkpoint of the chosen runs.
6. ``OUT/results.json`` / ``results.md`` / ``stage2_curves.png``; ``--full`` copies them to
   ``docs/demo/``.

Variants: ``--split-problems`` trains Stage 1 and Stage 2 on disjoint halves of the training
problems (``redi.demo.split``); ``--workers N`` runs the seeds in N processes at once.

Every piece skips what a previous run finished (data, Stage 1, each sweep point, each
evaluation's samples), so rerunning the same command picks up where it stopped.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from redi.cli_options import add_option
from redi.data import builtin_task
from redi.demo import stats
from redi.demo.pool import map_jobs, threads_per_worker
from redi.demo.split import split_problems, split_summary

RECIPES = importlib.resources.files("redi.recipes")
METHODS = ("sft", "sft_continued", "redi", "redi_symmetric", "dpo", "simpo")
BASIC = ("sft_continued", "redi")  # Stage-2 methods of a plain `make demo`
LR_GRID = (1e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)  # paper: Stage 2 at 1/50 of Stage 1 (4e-5 here)
PLATEAU_POINTS = 3
TEST_TEMPERATURE = 0.6
# Table labels; "{alpha}" is filled from the method's recipe (label()).
LABELS = {"sft": "SFT only (Stage 1)", "sft_continued": "continued SFT (alpha {alpha})",
          "redi": "REDI (alpha {alpha})", "redi_symmetric": "symmetric REDI (alpha {alpha})",
          "dpo": "DPO", "simpo": "SimPO"}
COLORS = {"sft_continued": "tab:gray", "redi": "tab:red", "redi_symmetric": "tab:orange",
          "dpo": "tab:blue", "simpo": "tab:green"}


@dataclass(frozen=True)
class DemoSize:
    problems: int = builtin_task.DEFAULT_PROBLEMS  # training problems (teacher rows)
    validation: int = builtin_task.DEFAULT_VALIDATION
    test: int = builtin_task.DEFAULT_TEST
    stage1_epochs: float = 24.0  # train loss ~0.002 at the end; validation curve in results
    stage1_points: int = 8  # validation checkpoints over Stage 1 (the plateau rule)
    stage2_epochs: float = 1.0
    stage2_points: int = 3  # checkpoints over Stage 2 (the curves)
    samples: int = 4  # k for the test table
    max_new_tokens: int = 160


FULL = DemoSize()
QUICK = DemoSize(problems=200, validation=8, test=8, stage1_epochs=1.0, stage1_points=2,
                 stage2_epochs=0.5, stage2_points=2, samples=2, max_new_tokens=48)


def _train(recipe: str, overrides: list[str]) -> Path:
    from redi.train.config import build_config
    from redi.train.loop import train

    return train(build_config(RECIPES / recipe, overrides))


def recipe_value(method: str, key: str):
    """A value of the method's committed recipe (e.g. the chosen learning rate)."""
    from redi.train.config import build_config

    return getattr(build_config(RECIPES / f"tiny_{method}.yaml"), key)


def label(method: str) -> str:
    """The method's name in tables and plots, with the alpha its recipe trains with."""
    if "{alpha}" not in LABELS[method]:
        return LABELS[method]
    return LABELS[method].format(alpha=f"{recipe_value(method, 'alpha'):g}")


def _done(run: Path) -> bool:
    return (run / "final" / "config.json").is_file()


def _save_every(data: Path, kind: str, epochs: float, batch: int, points: int) -> int:
    rows = sum(1 for _ in (data / f"{kind}.jsonl").open())
    return max(1, int(rows * epochs) // batch // points)


class Evaluator:
    """Greedy validation accuracy and sampled test pass@1 (each resumable in its folder)."""

    def __init__(self, data: Path, size: DemoSize):
        self.data, self.size = data, size

    def _run(self, model_dir: Path, split: str, out: Path, samples: int,
             temperature: float) -> dict:
        from redi.eval.generation import SamplingSettings
        from redi.eval.runner import EvalOptions, evaluate

        options = EvalOptions(samples=samples, prompt_style="plain", batch_size=100,
                              sampling=SamplingSettings(
                                  temperature=temperature,
                                  max_new_tokens=self.size.max_new_tokens))
        summary = out / "summary.json"
        if summary.is_file():
            return json.loads(summary.read_text())
        return evaluate(str(model_dir), str(self.data / f"{split}.jsonl"), str(out), "builtin",
                        options, progress=False)

    def validation(self, model_dir: Path, out: Path) -> float:
        return self._run(model_dir, "validation", out, 1, 0.0)["pass@1"]

    def test(self, model_dir: Path, out: Path) -> list[float]:
        self._run(model_dir, "test", out, self.size.samples, TEST_TEMPERATURE)
        ids = [json.loads(line)["id"] for line in (self.data / "test.jsonl").open()]
        return stats.per_problem_scores(out / "samples.jsonl", ids, self.size.samples)


def checkpoint_curve(run: Path, evaluator: Evaluator) -> list[tuple[int, float]]:
    """Validation greedy accuracy at each saved checkpoint of a finished run (the last
    checkpoint is the final model, evaluated as ``run/final``)."""
    from redi.train.checkpoint import list_checkpoints
    from redi.train.export import export_checkpoint
    from redi.train.run_id import stored_run_id

    checkpoints = list_checkpoints(run, stored_run_id(run))
    points = []
    for checkpoint in checkpoints[:-1]:
        step = int(checkpoint.name.split("_")[1])
        model_dir = run / "curve" / f"step_{step:08d}"
        if not (model_dir / "config.json").is_file():
            export_checkpoint(checkpoint, model_dir)
        points.append((step, evaluator.validation(model_dir, run / "curve_eval" / str(step))))
    last = int(checkpoints[-1].name.split("_")[1])
    return [*points, (last, evaluator.validation(run / "final", run / "val_eval"))]


def stage1(root: Path, data: Path, seed: int, size: DemoSize, evaluator: Evaluator) -> dict:
    """Train (or finish) Stage 1; its validation curve and the plateau verdict."""
    run = root / "sft"
    if not _done(run):
        batch = recipe_value("sft", "global_batch_size")
        every = _save_every(data, "sft", size.stage1_epochs, batch, size.stage1_points)
        # the shipped base replaces the recipe's from-scratch model_config
        _train("tiny_sft.yaml", [f"data={data}", f"init_from={builtin_task.BASE_MODEL}",
                                 "model_config=null",
                                 f"seed={seed}", "resume=auto",
                                 "progress=false", f"output_dir={run}",
                                 f"epochs={size.stage1_epochs}", f"save_every={every}",
                                 "keep_last=1000"])
    curve = checkpoint_curve(run, evaluator)
    return {"curve": curve, **plateau(curve, size.validation)}


def plateau(curve: list[tuple[int, float]], problems: int) -> dict:
    """Stage 1 has plateaued when validation accuracy no longer improves beyond noise: the
    gain from the point ``PLATEAU_POINTS - 1`` checkpoints before the last to the last,
    g = a_last - a_before, is at most 2 standard errors of that difference,
    SE = sqrt((a_before (1 - a_before) + a_last (1 - a_last)) / n) on n validation problems.
    (A fixed tolerance of a point or two fails on noise alone: one point's SE on 200
    problems is about 3 points.)"""
    if len(curve) < PLATEAU_POINTS:
        return {"plateau": False, "gain": None, "gain_se": None}
    before, last = curve[-PLATEAU_POINTS][1], curve[-1][1]
    se = math.sqrt((before * (1 - before) + last * (1 - last)) / problems)
    return {"plateau": last - before <= 2 * se, "gain": last - before, "gain_se": se}


def stage2(root: Path, data: Path, seed: int, method: str, lr: float, size: DemoSize) -> Path:
    """Train (or finish) one Stage-2 run from the seed's Stage-1 model; its folder."""
    run = root / method / f"lr{lr:g}"
    if not _done(run):
        batch = recipe_value(method, "global_batch_size")
        every = _save_every(data, "pairs", size.stage2_epochs, batch, size.stage2_points)
        _train(f"tiny_{method}.yaml", [
            f"data={data}", f"seed={seed}", "resume=auto", "progress=false",
            f"output_dir={run}", f"init_from={root / 'sft' / 'final'}", f"lr={lr}",
            f"epochs={size.stage2_epochs}", f"save_every={every}", "keep_last=1000"])
    return run


def final_chosen_logp(run: Path) -> float:
    """The chosen traces' per-token log-prob lp(y_w)/|y_w| the run logged last: how far a
    Stage-2 method pushed the correct traces down (the paper's sign of collapse)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    return records[-1]["chosen_logps_avg"]


def choose_lrs(sweep: dict[str, dict[float, list[float]]]) -> dict[str, float]:
    """Per method, the rate with the best mean validation accuracy (ties: the smaller)."""
    return {m: max(sorted(points), key=lambda lr: sum(points[lr]) / len(points[lr]))
            for m, points in sweep.items()}


def prepare_data(out: Path, task: str, size: DemoSize) -> Path:
    from redi.data.formatting import Formatter
    from redi.data.prepare import PrepareOptions, prepare_builtin_task
    from redi.data.tokenizer import load_tokenizer

    data = out / "data"
    if not (data / "stats.json").is_file():  # written last by prepare
        print(f"[demo] task {task!r}: {size.problems} training problems in {data}", flush=True)
        prepare_builtin_task(data, Formatter(load_tokenizer()), size.problems, size.test,
                             task=task, num_validation=size.validation,
                             options=PrepareOptions(progress=False))
    return data


def teacher_summary(data: Path) -> dict:
    rows = [json.loads(line) for line in (data / "raw.jsonl").open()]
    from redi.demo.teacher import error_rates

    written = json.loads((data / "stats.json").read_text())
    return error_rates(rows) | {"sft_rows": written["sft"]["written"],
                                "pairs": written["pairs"]["written"]}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_seed(out: Path, data: Path, seed: int, size: DemoSize,
               plan: dict[str, list[float]], stage1_data: Path, stage2_data: Path) -> None:
    """One seed's Stage 1 and its Stage-2 runs at every rate of ``plan`` ({method: rates}),
    each scored on validation. Leaves everything on disk (``run_demo`` reads it back)."""
    root, evaluator = out / f"seed{seed}", Evaluator(data, size)
    print(f"[demo] seed {seed}: Stage 1", flush=True)
    stage1(root, stage1_data, seed, size, evaluator)
    for method, rates in plan.items():
        for lr in rates:
            print(f"[demo] seed {seed}: Stage 2 {method} lr {lr:g}", flush=True)
            run = stage2(root, stage2_data, seed, method, lr, size)
            evaluator.validation(run / "final", run / "val_eval")


def test_seed(out: Path, data: Path, seed: int, size: DemoSize,
              chosen: dict[str, float]) -> None:
    """One seed's test samples of the Stage-1 model and of the chosen runs, and those runs'
    validation curves (on disk)."""
    root, evaluator = out / f"seed{seed}", Evaluator(data, size)
    print(f"[demo] seed {seed}: test evaluation and curves", flush=True)
    evaluator.test(root / "sft" / "final", root / "sft" / "test_eval")
    for method, lr in chosen.items():
        run = root / method / f"lr{lr:g}"
        evaluator.test(run / "final", run / "test_eval")
        checkpoint_curve(run, evaluator)


def run_demo(output: str | Path, seeds: list[int], methods: tuple[str, ...], size: DemoSize,
             task: str = builtin_task.DEFAULT_TASK, grid: tuple[float, ...] | None = None,
             compare_seeds: int | None = None, split: bool = False, workers: int = 1,
             command: str = "redi demo") -> dict:
    """The whole job (module docstring); returns the results dict also written to OUT.
    ``split``: Stage 1 and Stage 2 on disjoint problems (``redi.demo.split``); ``workers``:
    seeds trained and tested in that many processes at once (``redi.demo.pool``)."""
    from transformers.utils import logging as hf_logging

    from redi.files import atomic_write_text

    hf_logging.disable_progress_bar()  # dozens of model loads and saves: keep the log readable
    started = time.perf_counter()
    out = Path(output)
    data = prepare_data(out, task, size)
    stage1_data, stage2_data = split_problems(data) if split else (data, data)
    evaluator = Evaluator(data, size)
    stage2_methods = [m for m in METHODS[1:] if m in methods]
    seeds_of = {m: seeds if m in ("sft", *BASIC) or compare_seeds is None
                else seeds[:compare_seeds] for m in ("sft", *stage2_methods)}
    grids = {m: list(grid) if grid else [recipe_value(m, "lr")] for m in stage2_methods}
    # with a grid every seed sweeps every method; without, each trains its own methods
    plans = {s: {m: grids[m] for m in stage2_methods if grid or s in seeds_of[m]}
             for s in seeds}
    map_jobs(train_seed, [(out, data, s, size, plans[s], stage1_data, stage2_data)
                          for s in seeds], workers)
    first = {s: stage1(out / f"seed{s}", stage1_data, s, size, evaluator) for s in seeds}
    sweep_seeds = seeds if grid else []
    runs_at = {m: {lr: [out / f"seed{s}" / m / f"lr{lr:g}" for s in sweep_seeds]
                   for lr in grids[m]} for m in stage2_methods}
    sweep = {m: {lr: [evaluator.validation(r / "final", r / "val_eval") for r in runs]
                  for lr, runs in points.items()} for m, points in runs_at.items()}
    chosen_logp = {m: {lr: [final_chosen_logp(r) for r in runs] for lr, runs in points.items()}
                   for m, points in runs_at.items()}
    chosen = choose_lrs(sweep) if sweep_seeds else {m: grids[m][0] for m in stage2_methods}
    map_jobs(test_seed, [(out, data, s, size, {m: chosen[m] for m in stage2_methods
                                               if s in seeds_of[m]}) for s in seeds], workers)
    scores = {"sft": [evaluator.test(out / f"seed{s}" / "sft" / "final",
                                     out / f"seed{s}" / "sft" / "test_eval") for s in seeds]}
    curves = {}
    for method in stage2_methods:
        runs = [out / f"seed{s}" / method / f"lr{chosen[method]:g}" for s in seeds_of[method]]
        scores[method] = [evaluator.test(r / "final", r / "test_eval") for r in runs]
        curves[method] = [[(0, first[s]["curve"][-1][1]), *checkpoint_curve(r, evaluator)]
                          for s, r in zip(seeds_of[method], runs, strict=True)]
    results = {
        "task": task, "seeds": seeds, "command": command, "commit": _commit(),
        "size": asdict(size), "teacher": teacher_summary(data),
        "split_problems": split_summary(stage1_data, stage2_data) if split else None,
        "workers": workers, "threads_per_worker": threads_per_worker(workers),
        "methods": {m: _method_entry(m, chosen.get(m), scores[m], seeds_of[m]) for m in scores},
        "sweep": {m: {f"{lr:g}": v for lr, v in points.items()} for m, points in sweep.items()
                  if sweep_seeds},
        "sweep_chosen_logp_avg": {m: {f"{lr:g}": v for lr, v in points.items()}
                                  for m, points in chosen_logp.items() if sweep_seeds},
        "selection": {"rule": "per Stage-2 method, the learning rate with the best mean "
                              "validation greedy accuracy (final model) over the sweep seeds; "
                              "ties: the smaller rate; test never used",
                      "grid": list(grid) if grid else None, "sweep_seeds": sweep_seeds,
                      "chosen": chosen, "validation_problems": size.validation},
        "stage1": {str(s): first[s] | {"rule": f"gain over the last {PLATEAU_POINTS} "
                                                "validation points <= 2 SE"}
                   for s in seeds},
        "curves": {m: {str(s): c for s, c in zip(seeds_of[m], cs, strict=True)}
                   for m, cs in curves.items()},
        "paired": {f"redi_minus_{m}": stats.paired_difference(scores["redi"][:len(scores[m])],
                                                              scores[m]) | {"seeds": seeds_of[m]}
                   for m in scores if m != "redi" and "redi" in scores},
        "seconds": round(time.perf_counter() - started, 1),
    }
    table = results_table(results)
    atomic_write_text(out / "results.md", table + "\n")
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    plot = plot_curves(out / "stage2_curves.png", results)
    print(f"\n{table}\n\nwrote {out / 'results.md'}, {out / 'results.json'}, {plot}", flush=True)
    return results


def _method_entry(method: str, lr: float | None, scores: list[list[float]],
                  seeds: list[int]) -> dict:
    alpha = ({"sft_continued": 0.0, "redi": 0.8, "redi_symmetric": 1.0}.get(method)
             if method != "sft" else None)
    per_seed = [stats.mean_se(s) for s in scores]
    mean, spread = stats.mean_spread([p for p, _ in per_seed])
    return {"lr": lr, "alpha": alpha, "seeds": seeds, "pass1": [p for p, _ in per_seed],
            "pass1_se": [se for _, se in per_seed], "mean": mean, "spread": spread}


def results_table(results: dict) -> str:
    """Markdown: the test table (percent), the headline paired differences, the sweep."""
    seeds = results["seeds"]
    lines = ["| model | lr | test pass@1 % (mean ± spread over seeds) | per seed (± SE) | seeds |",
             "|---|---|---|---|---|"]
    for name, m in results["methods"].items():
        per_seed = ", ".join(f"{100 * p:.1f} ± {100 * se:.1f}"
                             for p, se in zip(m["pass1"], m["pass1_se"], strict=True))
        lr = f"{m['lr']:g}" if m["lr"] is not None else "-"
        lines.append(f"| {label(name)} | {lr} | {100 * m['mean']:.1f} ± "
                     f"{100 * m['spread']:.1f} | {per_seed} | {m['seeds']} |")
    lines += ["", "| paired difference (test) | diff (points) | SE | beyond 2 SE? | seeds |",
              "|---|---|---|---|---|"]
    for name, p in results["paired"].items():
        lines.append(f"| {name.replace('_minus_', ' − ')} | {100 * p['diff']:+.2f} | "
                     f"{100 * p['se']:.2f} | {'yes' if p['called'] else 'no'} | "
                     f"{p['seeds']} |")
    if results["sweep"]:
        lines += _sweep_table("validation greedy accuracy % (sweep)", results["sweep"],
                              lambda v: f"{100 * v:.1f}")
        lines += _sweep_table("chosen traces' log-prob per token at the end of Stage 2 (sweep)",
                              results["sweep_chosen_logp_avg"], lambda v: f"{v:.3f}")
    plateaus = ", ".join(f"seed {s}: {'yes' if v['plateau'] else 'NO'} (gain "
                         + (f"{100 * v['gain']:+.1f} ± {100 * v['gain_se']:.1f}; "
                            if v["gain"] is not None else "")
                         + ", ".join(f"{100 * acc:.1f}" for _, acc in v["curve"]) + " %)"
                         for s, v in results["stage1"].items())
    lines += ["", f"Task {results['task']!r}, seeds {seeds}, k = {results['size']['samples']} "
              f"test samples per problem at temperature {TEST_TEMPERATURE} on "
              f"{results['size']['test']} problems; SE over problems; sweep cells: one value "
              f"per seed on {results['size']['validation']} validation problems; chosen "
              f"rates: {results['selection']['chosen']}. Stage-1 plateau "
              f"({results['stage1'][str(seeds[0])]['rule']}; validation greedy accuracy at "
              f"{results['size']['stage1_points']} evenly spaced checkpoints): {plateaus}. "
              f"Teacher data: {results['teacher']}."
              + (f" Split problems: Stage 1 on {split['stage1_sft_rows']} problems' correct "
                 f"traces, Stage 2 on {split['stage2_pairs']} pairs of other problems."
                 if (split := results.get("split_problems")) else "")]
    return "\n".join(lines)


def _sweep_table(title: str, by_method: dict[str, dict[str, list[float]]], fmt) -> list[str]:
    """Markdown lines: one row per method, one column per rate, one value per seed."""
    rates = list(next(iter(by_method.values())))
    lines = ["", f"| {title} | " + " | ".join(f"lr {lr}" for lr in rates) + " |",
             "|---|" + "---|" * len(rates)]
    for name, points in by_method.items():
        cells = [" / ".join(fmt(v) for v in points[lr]) for lr in rates]
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    return lines


def plot_curves(path: Path, results: dict) -> Path:
    """One figure: validation greedy accuracy vs Stage-2 step of the chosen runs, every
    method and seed; beside it, when there was a sweep, the final validation accuracy vs
    learning rate (mean over the sweep seeds, bars: min to max), every method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = results["sweep"]
    fig, axes = plt.subplots(1, 2 if sweep else 1, figsize=(13 if sweep else 7, 4.5),
                             squeeze=False)
    ax = axes[0][0]
    for method, per_seed in results["curves"].items():
        for i, points in enumerate(per_seed.values()):
            xs, ys = zip(*points, strict=True)
            lr = results["methods"][method]["lr"]
            ax.plot(xs, [100 * y for y in ys], marker="o", color=COLORS[method], alpha=0.8,
                    label=f"{label(method)}, lr {lr:g}" if i == 0 else None)
    ax.set_xlabel("Stage-2 step")
    ax.set_ylabel("validation greedy accuracy %")
    ax.set_title(f"chosen rates; task {results['task']!r}, seeds {results['seeds']} "
                 "(step 0: Stage 1)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if sweep:
        ax = axes[0][1]
        for method, points in sweep.items():
            rates = sorted(points, key=float)
            values = [[100 * v for v in points[lr]] for lr in rates]
            mean = [sum(v) / len(v) for v in values]
            ax.errorbar([float(lr) for lr in rates], mean, marker="o", capsize=3,
                        yerr=[[m - min(v) for m, v in zip(mean, values, strict=True)],
                              [max(v) - m for m, v in zip(mean, values, strict=True)]],
                        color=COLORS[method], label=label(method))
        ax.set_xscale("log")
        ax.set_xlabel("Stage-2 learning rate")
        ax.set_ylabel("validation greedy accuracy % (final model)")
        seeds = results["selection"]["sweep_seeds"]
        ax.set_title(f"the sweep: every rate, mean over seeds {seeds}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}") from None
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"every learning rate must be > 0: {text!r}")
    return values


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="redi demo", description=__doc__.split("\n\n")[0])
    add_option(parser, "--output-dir", renamed_from="--output", default=None,
               help="the one output directory (default runs/demo, runs/demo-full with --full)")
    parser.add_argument("--task", default=builtin_task.DEFAULT_TASK,
                        help=f"built-in task: {', '.join(builtin_task.TASKS)}")
    parser.add_argument("--compare", action="store_true",
                        help="also symmetric REDI, DPO and SimPO from the same Stage 1")
    parser.add_argument("--sweep", action="store_true",
                        help="choose each Stage-2 learning rate from --grid on validation")
    parser.add_argument("--grid", type=_grid, default=LR_GRID,
                        help="learning rates of the sweep (comma-separated, each > 0)")
    parser.add_argument("--seeds", type=_positive_int, default=None, help="number of seeds (>= 1)")
    parser.add_argument("--compare-seeds", type=_positive_int, default=None,
                        help="run symmetric REDI, DPO and SimPO on the first N seeds only")
    parser.add_argument("--split-problems", action="store_true",
                        help="Stage 1 on one half of the training problems, Stage 2 on the "
                             "other half's pairs (a variant; see redi.demo.split)")
    parser.add_argument("--stage1-epochs", type=_positive_float, default=None,
                        help=f"Stage-1 epochs (default {FULL.stage1_epochs:g})")
    parser.add_argument("--workers", type=_positive_int, default=1,
                        help="seeds trained and tested in this many processes at once "
                             "(the CPU cores are shared among them)")
    parser.add_argument("--full", action="store_true", help="the documented experiment: "
                        "--compare --sweep over 3 seeds; rewrites docs/demo/")
    parser.add_argument("--quick", action="store_true",
                        help="a scaled-down run (seconds, not minutes): checks the pipeline")
    args = parser.parse_args(argv)
    if args.task not in builtin_task.TASKS:
        parser.error(f"unknown --task {args.task!r}; choose one of "
                     f"{', '.join(builtin_task.TASKS)}")
    seeds = args.seeds or (3 if args.full else 1)
    output = Path(args.output_dir or ("runs/demo-full" if args.full else "runs/demo"))
    methods = METHODS if args.compare or args.full else ("sft", *BASIC)
    size = QUICK if args.quick else FULL
    if args.stage1_epochs is not None:
        size = replace(size, stage1_epochs=args.stage1_epochs)
    command = "redi demo " + " ".join(argv)
    run_demo(output, list(range(seeds)), methods, size, args.task,
             args.grid if args.sweep or args.full else None,
             compare_seeds=args.compare_seeds, split=args.split_problems,
             workers=args.workers, command=command.strip())
    if args.full and not args.split_problems and args.stage1_epochs is None:
        docs = Path("docs/demo")
        docs.mkdir(parents=True, exist_ok=True)
        for name in ("results.json", "results.md", "stage2_curves.png"):
            shutil.copyfile(output / name, docs / name)
        print(f"copied the results to {docs}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
