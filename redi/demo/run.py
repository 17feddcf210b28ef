"""``redi demo`` (``make demo``): does Stage 2 on (correct, incorrect) teacher traces add
accuracy beyond more SFT on the correct traces? The paper's claim, tested at toy scale.

1. Data (``OUT/data``): the built-in task (``--task styles``, the default: a small teacher
   model's own verified samples in two styles, verbose and a less reliable terse one;
   ``--task addition``: the same teacher idea in one style; ``--task slips``: correct
   traces with injected slips), with disjoint train, validation and test problems.
2. Stage 1, per seed: SFT on the correct traces (``recipes/tiny_sft.yaml``) for
   ``stage1_epochs``, starting from the task's shipped base (an early checkpoint of its
   teacher's run, as the paper's student is a pretrained base model, not a random one);
   validation greedy accuracy at evenly spaced checkpoints; Stage 1 has plateaued when the
   last gain is within noise (``plateau``; the rule's verdict is written to results).
3. Stage 2, from that one checkpoint: ``sft_more`` (the Stage-1 loss, token mean, on the
   pairs' chosen traces with REDI's steps, batch and learning rates), ``sft_continued``
   (REDI with alpha 0: REDI's per-sequence normalization, which favours short traces),
   ``redi`` (alpha 0.8), and with ``--compare`` ``redi_symmetric`` (alpha 1), ``dpo``,
   ``simpo``, ``redi_floor`` (REDI whose negative term stops below a probability floor);
   recipes ``recipes/tiny_<method>.yaml``.
4. Learning rates: ``--full`` (or ``--sweep``) trains every Stage-2 method at every value of
   a fixed grid on every seed and picks, per method, the value with the best mean over
   seeds of the final model's validation *sampled* pass@1 (k samples at the test
   temperature: the test protocol, the figure that is reported; ties: the smaller rate).
   Validation greedy accuracy is recorded too. The rule was fixed before any test figure
   was seen; the test split is only used for the final table. Without a sweep, the rates
   committed in the recipes are used.
5. The mechanism, for every trained model (``redi.demo.mechanism``): the terse share and
   the accuracy per style of its sampled outputs, and the Stage-2 pairs' chosen and
   rejected per-token log-probs under the final model.
6. Test: pass@1 over k samples (temperature 0.6) with its standard error over problems,
   per seed and mean (spread over seeds), terse share and accuracy by style; paired
   differences (REDI minus each control, each other method minus REDI) with a t critical
   value (``redi.demo.stats``); curves: validation greedy accuracy at each Stage-2
   checkpoint of the chosen runs.
7. ``OUT/results.json`` / ``results.md`` / ``stage2_curves.png`` (``redi.demo.report``);
   ``--full`` copies them to ``docs/demo/``.

The fixed design (methods, recipes, grid, sizes, the pre-registered prediction) is
``redi.demo.design``; the flags are ``redi.demo.cli``.

Variants: ``--split-problems`` trains Stage 1 and Stage 2 on disjoint halves of the training
problems (``redi.demo.split``); ``--workers N`` runs the seeds in N processes at once.

Every piece (data, Stage 1 of a seed, each Stage-2 run, each evaluation) records the
settings it was made with and is reused by a rerun with the same settings, refused with one
line by a rerun with others (``redi.demo.pieces``): rerunning the same command picks up
where it stopped, and never serves a piece made for another task, size or rate.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from redi.data import builtin_task
from redi.demo import stats
from redi.demo.design import (
    BASIC,
    METHODS,
    PREREGISTERED,
    SELECTION_METRIC,
    TEST_TEMPERATURE,
    DemoSize,
    recipe_file,
    recipe_settings,
    recipe_value,
)
from redi.demo.evaluation import Evaluator, final_model
from redi.demo.pieces import Piece, claim
from redi.demo.pool import map_jobs, threads_per_worker
from redi.demo.report import plot_curves, results_table
from redi.demo.split import split_problems, split_summary
from redi.demo.summary import method_entry, paired_entries, sweep_entry, usable_window
from redi.demo.task_data import chosen_traces, prepare_data, teacher_summary

PLATEAU_POINTS = 3
LONGER = 3  # the falsification control: this many times sft_more's steps
# Training settings the demo sets itself (recorded under their own names, not the recipe's)
OVERRIDDEN = ("data", "output_dir", "init_from", "model_config", "seed", "resume", "progress",
              "lr", "epochs", "save_every", "keep_last")


@dataclass(frozen=True)
class Inputs:
    """What every seed's pieces are made from (picklable: ``--workers`` sends it along)."""

    out: Path
    size: DemoSize
    data: Piece
    stage1_data: Path  # the data piece's folder, or its Stage-1 half
    stage2_data: Path  # the data piece's folder, or its Stage-2 half (holds pairs.jsonl)
    base: Path
    base_sha256: str

    def train_data(self, method: str) -> Path:
        if method == "sft":
            return self.stage1_data
        return chosen_traces(self.stage2_data) if method == "sft_more" else self.stage2_data

    @property
    def evaluator(self) -> Evaluator:
        return Evaluator(self.data, self.size)


def _train(recipe, overrides: list[str]) -> Path:
    from redi.train.config import build_config
    from redi.train.loop import train

    return train(build_config(recipe, overrides))


def _save_every(data: Path, kind: str, epochs: float, batch: int, points: int) -> int:
    rows = sum(1 for _ in (data / f"{kind}.jsonl").open())
    return max(1, int(rows * epochs) // batch // points)


def _trained(inputs: Inputs, folder: Path, method: str, seed: int, settings: dict,
             epochs: float, points: int, overrides: list[str]) -> Piece:
    """The piece of one training run of ``method`` (trained, or finished, unless done)."""
    data = inputs.train_data(method)
    piece = claim(folder, {**settings, "method": method, "seed": seed, "epochs": epochs,
                           "checkpoints": points, "data": inputs.data.identity,
                           "train_data": str(data.relative_to(inputs.data.folder)),
                           **recipe_settings(method, OVERRIDDEN)})
    if not (final_model(piece) / "config.json").is_file():
        kind = "sft" if recipe_value(method, "loss") == "sft" else "pairs"
        every = _save_every(data, kind, epochs, recipe_value(method, "global_batch_size"),
                            points)
        _train(recipe_file(method), [
            f"data={data}", f"seed={seed}", "resume=auto", "progress=false",
            f"output_dir={folder / 'run'}", f"epochs={epochs}", f"save_every={every}",
            "keep_last=1000", *overrides])
    return piece


def stage1(inputs: Inputs, seed: int) -> Piece:
    """Stage 1 of a seed from the shipped base (its recipe's model_config replaced)."""
    return _trained(inputs, inputs.out / f"seed{seed}" / "sft", "sft", seed,
                    {"piece": "stage1", "lr": recipe_value("sft", "lr"),
                     "base": inputs.base_sha256},
                    inputs.size.stage1_epochs, inputs.size.stage1_points,
                    [f"init_from={inputs.base}", "model_config=null"])


def stage2(inputs: Inputs, first: Piece, seed: int, method: str, lr: float,
           times: int = 1) -> Piece:
    """One Stage-2 run from the seed's Stage-1 model; ``times`` > 1 trains that many times
    the steps into its own folder (the pre-registered falsification control: ``sft_more``
    at its chosen rate with ``LONGER`` times the steps)."""
    name = method if times == 1 else f"{method}_x{times}"
    return _trained(inputs, inputs.out / f"seed{seed}" / name / f"lr{lr:g}", method, seed,
                    {"piece": "stage2", "lr": lr, "stage1": first.identity},
                    times * inputs.size.stage2_epochs, inputs.size.stage2_points,
                    [f"init_from={final_model(first)}", f"lr={lr}"])


def plateau(curve: list[tuple[int, list[float]]]) -> dict:
    """Stage 1 has plateaued when validation accuracy no longer improves beyond noise: the
    gain g from the checkpoint ``PLATEAU_POINTS - 1`` before the last to the last is at most
    t_crit x SE, SE the paired standard error of the per-problem greedy verdicts of the two
    checkpoints (the same problems: sd_i(v_i(last) - v_i(before)) / sqrt(n); t_crit from
    Student's t with n - 1 degrees of freedom, two-sided 95 %). A fixed tolerance of a
    point or two fails on noise alone."""
    if len(curve) < PLATEAU_POINTS:
        return {"plateau": False, "gain": None, "gain_se": None, "t_crit": None}
    result = stats.paired_verdicts(curve[-PLATEAU_POINTS][1], curve[-1][1])
    return {"plateau": result["gain"] <= result["t_crit"] * result["gain_se"], **result}


def choose_lrs(sweep: dict[str, dict[float, list[float]]]) -> dict[str, float]:
    """Per method, the rate with the best mean over seeds (ties: the smaller)."""
    return {m: max(sorted(points), key=lambda lr: sum(points[lr]) / len(points[lr]))
            for m, points in sweep.items()}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_seed(inputs: Inputs, seed: int, plan: dict[str, list[float]]) -> None:
    """One seed's Stage 1 and its Stage-2 runs at every rate of ``plan`` ({method: rates}),
    each scored on validation. Leaves everything on disk (``run_demo`` reads it back)."""
    evaluator = inputs.evaluator
    print(f"[demo] seed {seed}: Stage 1", flush=True)
    first = stage1(inputs, seed)
    evaluator.curve(first)
    evaluator.validation_cell(first, inputs.stage2_data)
    for method, rates in plan.items():
        for lr in rates:
            print(f"[demo] seed {seed}: Stage 2 {method} lr {lr:g}", flush=True)
            evaluator.validation_cell(stage2(inputs, first, seed, method, lr),
                                      inputs.stage2_data)


def test_seed(inputs: Inputs, seed: int, chosen: dict[str, float]) -> None:
    """One seed's test samples of the Stage-1 model and of the chosen runs, and those runs'
    validation curves (on disk)."""
    evaluator = inputs.evaluator
    print(f"[demo] seed {seed}: test evaluation and curves", flush=True)
    first = stage1(inputs, seed)
    evaluator.sampled(first, "test")
    for method, lr in chosen.items():
        run = stage2(inputs, first, seed, method, lr)
        evaluator.sampled(run, "test")
        evaluator.curve(run)


def _accuracy(verdicts: list[float]) -> float:
    return sum(verdicts) / len(verdicts)


def run_demo(output: str | Path, seeds: list[int], methods: tuple[str, ...], size: DemoSize,
             task: str = builtin_task.DEFAULT_TASK, grid: tuple[float, ...] | None = None,
             compare_seeds: int | None = None, split: bool = False, workers: int = 1,
             command: str = "redi demo") -> dict:
    """The whole job (module docstring); returns the results dict also written to OUT.
    ``split``: Stage 1 and Stage 2 on disjoint problems (``redi.demo.split``); ``workers``:
    seeds trained and tested in that many processes at once (``redi.demo.pool``)."""
    from transformers.utils import logging as hf_logging

    from redi.files import atomic_write_text
    from redi.model_dir import model_fingerprint

    hf_logging.disable_progress_bar()  # dozens of model loads and saves: keep the log readable
    started = time.perf_counter()
    out = Path(output)
    data = prepare_data(out, task, size)
    stage1_data, stage2_data = split_problems(data.folder) if split else (data.folder,) * 2
    base = builtin_task.base_model(task)
    inputs = Inputs(out, size, data, stage1_data, stage2_data, base, model_fingerprint(base))
    evaluator = inputs.evaluator
    stage2_methods = [m for m in METHODS[1:] if m in methods]
    seeds_of = {m: seeds if m in ("sft", *BASIC) or compare_seeds is None
                else seeds[:compare_seeds] for m in ("sft", *stage2_methods)}
    grids = {m: list(grid) if grid else [recipe_value(m, "lr")] for m in stage2_methods}
    # with a grid every seed sweeps every method; without, each trains its own methods
    plans = {s: {m: grids[m] for m in stage2_methods if grid or s in seeds_of[m]}
             for s in seeds}
    map_jobs(train_seed, [(inputs, s, plans[s]) for s in seeds], workers)
    first = {s: stage1(inputs, s) for s in seeds}
    stage1_curves = {s: evaluator.curve(first[s]) for s in seeds}
    swept = {m: [s for s in seeds if m in plans[s]] for m in stage2_methods}
    cells = {m: {lr: [evaluator.validation_cell(stage2(inputs, first[s], s, m, lr),
                                                stage2_data) for s in swept[m]]
                 for lr in grids[m]} for m in stage2_methods}
    chosen = choose_lrs({m: {lr: [c[SELECTION_METRIC] for c in cs] for lr, cs in points.items()}
                         for m, points in cells.items()})
    longer = None
    if grid and "sft_more" in chosen:
        longer = sweep_entry([evaluator.validation_cell(
            stage2(inputs, first[s], s, "sft_more", chosen["sft_more"], LONGER), stage2_data)
            for s in swept["sft_more"]]) | {"lr": chosen["sft_more"], "times_steps": LONGER,
                                            "seeds": swept["sft_more"]}
    map_jobs(test_seed, [(inputs, s, {m: chosen[m] for m in stage2_methods
                                      if s in seeds_of[m]}) for s in seeds], workers)
    tested = {"sft": [evaluator.sampled(first[s], "test") for s in seeds]}
    curves = {}
    for method in stage2_methods:
        runs = {s: stage2(inputs, first[s], s, method, chosen[method]) for s in seeds_of[method]}
        tested[method] = [evaluator.sampled(r, "test") for r in runs.values()]
        curves[method] = {str(s): [(0, _accuracy(stage1_curves[s][-1][1])),
                                   *[(step, _accuracy(v)) for step, v in evaluator.curve(r)]]
                          for s, r in runs.items()}
    sweep = {m: {f"{lr:g}": sweep_entry(cs) | {"seeds": swept[m]} for lr, cs in points.items()}
             for m, points in cells.items()}
    rule = (f"gain over the last {PLATEAU_POINTS} validation points <= t_crit x the paired SE "
            "of the per-problem greedy verdicts (n - 1 degrees of freedom)")
    results = {
        "task": task, "selection_metric": SELECTION_METRIC, "seeds": seeds,
        "command": command, "commit": _commit(), "size": asdict(size),
        "teacher": teacher_summary(data.folder),
        "split_problems": split_summary(stage1_data, stage2_data) if split else None,
        "workers": workers, "threads_per_worker": threads_per_worker(workers),
        "methods": {m: method_entry(m, chosen.get(m), tested[m], seeds_of[m]) for m in tested},
        "sweep": sweep,
        "sweep_chosen_logp_avg": {m: {lr: cell["chosen_logp_per_token"]
                                      for lr, cell in points.items()}
                                  for m, points in sweep.items()},
        "usable_window": usable_window(sweep),
        "sft_more_longer": longer,
        "selection": {"metric": SELECTION_METRIC,
                      "rule": "per Stage-2 method, the learning rate with the best mean over "
                              "seeds of the final model's validation sampled pass@1 (k "
                              f"samples at temperature {TEST_TEMPERATURE}, the test protocol);"
                              " ties: the smaller rate; test never used",
                      "grid": list(grid) if grid else None,
                      "sweep_seeds": seeds if grid else [],
                      "chosen": chosen, "validation_problems": size.validation},
        "stage1": {str(s): {"curve": [(step, _accuracy(v)) for step, v in stage1_curves[s]],
                            **plateau(stage1_curves[s]), "rule": rule,
                            "validation": evaluator.validation_cell(first[s], stage2_data)}
                   for s in seeds},
        "curves": curves,
        "paired": paired_entries(tested, seeds_of),
        "statistics": stats.DOF_RULE,
        "preregistered": PREREGISTERED,
        "seconds": round(time.perf_counter() - started, 1),
    }
    table = results_table(results)
    atomic_write_text(out / "results.md", table + "\n")
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    plot = plot_curves(out / "stage2_curves.png", results)
    print(f"\n{table}\n\nwrote {out / 'results.md'}, {out / 'results.json'}, {plot}", flush=True)
    return results
