"""``redi demo`` (``make demo``): does Stage 2 on (correct, incorrect) teacher traces add
accuracy beyond more SFT on the correct traces? The paper's claim, tested at toy scale.

1. Data (``OUT/data``): the built-in task (``--task teacher``, the default: a small teacher
   model's own samples, verified; ``--task slips``: correct traces with injected slips, the
   contrast case), with disjoint train, validation and test problems.
2. Stage 1, per seed: SFT on the correct traces (``recipes/tiny_sft.yaml``) for
   ``stage1_epochs``, starting from the shipped base (``redi/data/builtin-base/``: an early
   checkpoint of the teacher's run, as the paper's student is a pretrained base model, not a
   random one); validation greedy accuracy at evenly spaced checkpoints; Stage 1 has
   plateaued when accuracy no longer improves beyond noise (``plateau``; the rule's verdict
   is written to results).
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
6. ``OUT/results.json`` / ``results.md`` / ``stage2_curves.png`` (``redi.demo.report``);
   ``--full`` copies them to ``docs/demo/``.

The fixed design (methods, recipes, grid, sizes) is ``redi.demo.design``; the flags are
``redi.demo.cli``.

Variants: ``--split-problems`` trains Stage 1 and Stage 2 on disjoint halves of the training
problems (``redi.demo.split``); ``--workers N`` runs the seeds in N processes at once.

Every piece skips what a previous run finished (data, Stage 1, each sweep point, each
evaluation's samples), so rerunning the same command picks up where it stopped.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from redi.data import builtin_task
from redi.demo import stats
from redi.demo.design import BASIC, METHODS, RECIPES, TEST_TEMPERATURE, DemoSize, recipe_value
from redi.demo.pool import map_jobs, threads_per_worker
from redi.demo.report import plot_curves, results_table
from redi.demo.split import split_problems, split_summary

PLATEAU_POINTS = 3


def _train(recipe: str, overrides: list[str]) -> Path:
    from redi.train.config import build_config
    from redi.train.loop import train

    return train(build_config(RECIPES / recipe, overrides))


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


def stage1(root: Path, data: Path, seed: int, size: DemoSize, evaluator: Evaluator,
           base: Path) -> dict:
    """Train (or finish) Stage 1 from ``base``; its validation curve and the plateau verdict."""
    run = root / "sft"
    if not _done(run):
        batch = recipe_value("sft", "global_batch_size")
        every = _save_every(data, "sft", size.stage1_epochs, batch, size.stage1_points)
        # the shipped base replaces the recipe's from-scratch model_config
        _train("tiny_sft.yaml", [f"data={data}", f"init_from={base}",
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
               plan: dict[str, list[float]], stage1_data: Path, stage2_data: Path,
               base: Path) -> None:
    """One seed's Stage 1 and its Stage-2 runs at every rate of ``plan`` ({method: rates}),
    each scored on validation. Leaves everything on disk (``run_demo`` reads it back)."""
    root, evaluator = out / f"seed{seed}", Evaluator(data, size)
    print(f"[demo] seed {seed}: Stage 1", flush=True)
    stage1(root, stage1_data, seed, size, evaluator, base)
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
    base = builtin_task.base_model(task)
    map_jobs(train_seed, [(out, data, s, size, plans[s], stage1_data, stage2_data, base)
                          for s in seeds], workers)
    first = {s: stage1(out / f"seed{s}", stage1_data, s, size, evaluator, base)
             for s in seeds}
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
