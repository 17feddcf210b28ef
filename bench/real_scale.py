"""The paper's shapes rehearsed on CPU (issue 27): random weights of the models the recipes
name, with the real vocabulary and depth, fp32, one process, two optimizer steps of one
REDI pair each; where memory bugs, planner errors and slow paths show first.

    python bench/run.py --sections real-scale --out bench/results/cpu-<date>  # hours
    python bench/run.py --quick --sections real-scale  # every measurement at small shapes
    python bench/real_scale.py --rows 0 2 --no-longest --out DIR  # chosen rows only

Rows (``PROFILES["full"]``; ``--quick``: the same descriptions with 2 layers of width 64,
the real vocabulary, 2,048 positions and traces of 128 and 256 tokens):

* Qwen2.5-0.5B, full fine-tuning, T = 2,048 tokens per trace (a 256-token prompt and the
  response) and T = 8,192 (with activation checkpointing, ours and the peers');
* Qwen2.5-Math-1.5B, LoRA r=16 on every linear layer but the head, T = 1,024 and T = 4,096
  (activation checkpointing).

For each, ``redi train`` from ``model_config: <name>`` (random weights), every run in its own
process (``trainer_peers.run_worker``):

1. the plan: ``redi plan --device cpu``'s peak for the run's config (``redi.train.plan``,
   from the config alone). A row whose plan exceeds what it may use is recorded as "does not
   fit (planned X GiB)" before anything is loaded;
2. the uninterrupted run: 2 steps, a checkpoint after each, the export, probed
   (``trainer_peers_worker.LoopProbe``): the peak RSS of set-up and steps (what the plan
   predicts; checkpoint and export have their own), tokens/s of step 2, the time from the
   process's start to the end of step 1, the step-1 checkpoint's size and save time, the
   export's size and time, and the trained model's logits on one batch, saved before the
   export;
3. the export loaded by ``AutoModelForCausalLM`` in a new process: its logits on that batch
   against the trained model's (LoRA exports the merged W + s B A, so there they differ by
   rounding: the largest difference is recorded);
4. the resumed run: from the step-1 checkpoint, in another output directory: its step-2
   loss against the uninterrupted run's;
5. with ``compare_logging`` (the 0.5B shape at T = 2,048): the same run with no step logged
   (``max_steps=3 log_every=3``, stopped after step 2): step 2's peak RSS, logged against
   unlogged (the logged step also computes ``update_norm``);
6. the peers on the same model shape, pairs, LoRA and checkpointing: TRL ``DPOTrainer``
   (precomputed reference), ``CPOTrainer`` (SimPO) and our ``REDITrainer``: tokens/s of
   step 2, peak RSS (of the whole process: they save nothing; ours': set-up and steps),
   time to the end of the first step.

Then the longest REDI pair whose two steps fit ``long_budget_bytes`` (20 GiB) at the 0.5B
shape, ``redi train`` against TRL ``DPOTrainer``, both without activation checkpointing
(``longest``, ``search``): between the longest row above that fitted and the shortest that
ran out of memory, candidates on a grid of
``long_resolution`` tokens predicted to fit (ours: the plan; TRL: a line from the same
model's weights, gradients, moments and runtime through its last fit), the prediction
calibrated on each measured fit, the midpoint after an out-of-memory; each confirmed by a
2-step run, at most ``long_tries`` runs per trainer, each under the guard and ``timeout_s``.
The plan's longest pair with activation checkpointing is given beside it (planned only: hours
per step here).

Every worker runs with ``MALLOC_MMAP_THRESHOLD_=65536`` (freed blocks leave the resident set,
as ``plan_validation.py`` checks the planner) and under a resident-set guard: what the row
may use or the machine's available memory less ``HEADROOM``, whichever is lower. A worker that
passes it is killed, and its row says "out of memory" with the size it reached.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from proc_status import available_bytes
from report import Column, Section, add_ratios
from settings import GiB, Settings
from trainer_peers import BETA, SIMPO_GAMMA, prepare_pairs, run_worker, write_pairs
from trainer_peers_worker import redi_train_argv

MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
HEADROOM = GiB  # left to the machine when a guard is its available memory
# a LoRA export is merged (W + s B A in float64, rounded to fp32: redi.train.lora.merged_state),
# so its logits differ from the adapters' by rounding: this much, relative to the largest
MERGED_LOGITS_RTOL = 1e-5
PAIRS = 3  # per data set: the runs take 2 steps of one pair (3 with the stopped ones)


@dataclasses.dataclass(frozen=True)
class Row:
    model: str  # a shipped description (redi.train.model_descriptions)
    seq_len: int  # T: tokens per trace, the prompt's included
    lora_r: int | None = None  # LoRA adapters on every linear layer but the head; None: full
    checkpointing: bool = False  # activation checkpointing, ours and the peers'
    compare_logging: bool = False  # also run the steps unlogged: peak RSS logged vs not


@dataclasses.dataclass(frozen=True)
class RealScaleSettings:
    rows: tuple[Row, ...]
    shrink: dict  # model_config keys set over every description (the quick profile's shapes)
    prompt_len: int
    budget_bytes: int  # what a row may use: its plan must fit, its guard
    long_model: str
    long_budget_bytes: int
    long_resolution: int  # the longest-pair search's grid of T
    long_tries: int  # measured candidates per trainer, at most (0: no search)
    timeout_s: float  # per worker process
    probe_tokens: int  # the export check's batch
    threads: int
    trainers: tuple[str, ...] = ()  # rows and search: only these ("redi-train", PEERS'; all: ())


PROFILES = {
    "full": RealScaleSettings(
        rows=(Row("qwen2.5-0.5b", 2048, compare_logging=True),
              Row("qwen2.5-0.5b", 8192, checkpointing=True),
              Row("qwen2.5-math-1.5b", 1024, lora_r=16),
              Row("qwen2.5-math-1.5b", 4096, lora_r=16, checkpointing=True)),
        shrink={}, prompt_len=256, budget_bytes=24 * GiB, long_model="qwen2.5-0.5b",
        long_budget_bytes=20 * GiB, long_resolution=256, long_tries=3, timeout_s=3 * 3600,
        probe_tokens=64, threads=os.cpu_count() or 1),
    "quick": RealScaleSettings(
        rows=(Row("qwen2.5-0.5b", 128, compare_logging=True),
              Row("qwen2.5-0.5b", 256, checkpointing=True),
              Row("qwen2.5-math-1.5b", 128, lora_r=16),
              Row("qwen2.5-math-1.5b", 256, lora_r=16, checkpointing=True)),
        shrink=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048),
        prompt_len=32, budget_bytes=24 * GiB, long_model="qwen2.5-0.5b",
        long_budget_bytes=2 * GiB, long_resolution=64, long_tries=3, timeout_s=1800,
        probe_tokens=16, threads=1),
}
# the peers: (trainer, loss, label)
PEERS = (("trl-dpo", "dpo", "TRL DPOTrainer (ref precomputed)"),
         ("trl-cpo", "simpo", "TRL CPOTrainer (SimPO)"),
         ("redi-trl", "redi", "redi REDITrainer (TRL)"))


def _model_config(model: str, rs: RealScaleSettings) -> dict:
    return {"name": model, **rs.shrink}


def _base(row: Row, rs: RealScaleSettings, kind: str, trainer: str, loss: str,
          impl: str) -> dict:
    return dict(section="real-scale", kind=kind, model=row.model, lora_r=row.lora_r,
                mode=f"LoRA r={row.lora_r}" if row.lora_r else "full",
                activation_checkpointing=row.checkpointing, seq_len=row.seq_len,
                prompt_len=rs.prompt_len, tokens=2 * row.seq_len, trainer=trainer, loss=loss,
                impl=impl, status="ok", error=None, time_s=None, tokens_per_s=None,
                peak_bytes=None, first_step_s=None, attn_implementation=None, guard_bytes=None)


def _failed(result: dict, peak: int) -> dict:
    """A row's fields for a worker that did not finish: ``oom`` (with the resident set it
    reached), ``timeout`` or ``failed``."""
    return {"status": result.get("stopped", "failed"), "error": result["error"],
            "peak_bytes": None, "peak_bytes_at_failure": peak}


def _guard(budget: int) -> int:
    return min(budget, available_bytes() - HEADROOM)


def _launch(spec: dict, work: Path, guard: int, rs: RealScaleSettings) -> tuple[dict, int]:
    return run_worker(spec, work, guard_bytes=guard, timeout_s=rs.timeout_s,
                      extra_env=MMAP_ENV)


def _size(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _write_data(case: Path, rs: RealScaleSettings, seq_len: int) -> None:
    """Pairs whose traces are longer than ``seq_len`` (so every trainer cuts them to exactly
    that, with ``max_length``), as conversational rows and as ``redi prepare`` output."""
    case.mkdir(parents=True)
    write_pairs(case / "pairs.jsonl", PAIRS, rs.prompt_len, seq_len - rs.prompt_len)
    prepare_pairs(case / "pairs.jsonl", case / "data")


def _ours_spec(row: Row, rs: RealScaleSettings, case: Path, out: str, overrides=(),
               **fields) -> dict:
    """A ``redi train`` worker of ``row``: 2 steps, a checkpoint after each, probed."""
    model = [f"model_config.{k}={json.dumps(v)}"
             for k, v in _model_config(row.model, rs).items()]
    lora = [f"lora_r={row.lora_r}"] if row.lora_r else []
    return dict(trainer="redi-train", loss="redi", data_dir=str(case / "data"),
                out_dir=str(case / out), steps=2, global_batch=1, micro_batch=1,
                max_length=row.seq_len, beta=BETA["redi"], gamma=SIMPO_GAMMA,
                threads=rs.threads, liger=False, probe=True, probe_tokens=rs.probe_tokens,
                overrides=[*model, *lora, f"max_prompt_length={rs.prompt_len}",
                           f"activation_checkpointing={str(row.checkpointing).lower()}",
                           "save_every=1", "keep_last=2", *overrides], **fields)


def planned(spec: dict):
    """``redi plan --device cpu`` of the worker's ``redi train`` config (the ``Plan``)."""
    from redi.train.config import build_config, fit_micro_batch
    from redi.train.plan import model_facts, plan

    config, _ = fit_micro_batch(build_config(None, redi_train_argv(spec)), 1)
    return plan(config, model_facts(config), 1, "cpu")


def _training_peak(result: dict) -> int:
    """The peak RSS of set-up and steps (``LoopProbe`` events): what the plan predicts."""
    return max(e["peak_rss_bytes"] for e in result["events"] if e["what"] in ("set-up", "step"))


def _steps(result: dict) -> list[dict]:
    return [e for e in result["events"] if e["what"] == "step"]


def ours(row: Row, rs: RealScaleSettings, case: Path) -> dict:
    """Items 1-5 of the module docstring for ``row`` (data in ``case``)."""
    out = _base(row, rs, "trainer", "redi-train", "redi", "redi train")
    spec = _ours_spec(row, rs, case, "uninterrupted",
                      logits_file=str(case / "logits.safetensors"))
    guard = _guard(rs.budget_bytes)
    out.update(planned_bytes=planned(spec).peak, guard_bytes=guard)
    if out["planned_bytes"] > guard:
        return {**out, "status": "does not fit",
                "error": f"does not fit (planned {out['planned_bytes'] / GiB:.2f} GiB; "
                         f"the row may use {guard / GiB:.2f} GiB)"}
    result, peak = _launch(spec, case / "work-uninterrupted", guard, rs)
    if "error" in result:
        return {**out, **_failed(result, peak)}
    steps = _steps(result)
    saved = next(e for e in result["events"] if e["what"] == "checkpoint")
    export = next(e for e in result["events"] if e["what"] == "export")
    out.update(
        peak_bytes=_training_peak(result), process_peak_bytes=max(peak, result["peak_rss_bytes"]),
        step_peak_bytes=[e["peak_rss_bytes"] for e in steps], step_times_s=result["step_times_s"],
        time_s=steps[-1]["seconds"], tokens_per_s=2 * row.seq_len / steps[-1]["seconds"],
        first_step_s=result["first_step_s"], attn_implementation=result["attn_implementation"],
        uninterrupted_loss=result["losses"]["2"], checkpoint_bytes=_size(saved["path"]),
        checkpoint_s=saved["seconds"], checkpoint_peak_bytes=saved["peak_rss_bytes"],
        export_bytes=_size(case / "uninterrupted" / "final"), export_s=export["seconds"],
        export_peak_bytes=export["peak_rss_bytes"])
    out["plan_vs_measured"] = out["planned_bytes"] / out["peak_bytes"]

    reload, _ = _launch(dict(trainer="reload", model_dir=str(case / "uninterrupted" / "final"),
                             logits_file=str(case / "logits.safetensors"), threads=rs.threads),
                        case / "work-reload", guard, rs)
    out.update(export_logits_equal=reload.get("logits_equal"),
               export_logits_max_abs_diff=reload.get("logits_max_abs_diff"),
               export_logits_max_abs=reload.get("logits_max_abs"),
               export_reload_error=reload.get("error"))
    out["export_logits_match"] = "error" not in reload and (reload["logits_equal"] or (
        row.lora_r is not None and reload["logits_max_abs_diff"]
        <= MERGED_LOGITS_RTOL * max(1.0, reload["logits_max_abs"])))

    resumed, _ = _launch(_ours_spec(row, rs, case, "resumed", [f"resume={saved['path']}"],
                                    stop_after=1), case / "work-resumed", guard, rs)
    out.update(resumed_loss=resumed.get("losses", {}).get("2"), resume_error=resumed.get("error"))
    out["resume_loss_equal"] = out["resumed_loss"] == out["uninterrupted_loss"]

    if row.compare_logging:
        unlogged, _ = _launch(_ours_spec(row, rs, case, "unlogged", ["max_steps=3", "log_every=3"],
                                         stop_after=2), case / "work-unlogged", guard, rs)
        if "error" in unlogged:
            out["unlogged_error"] = unlogged["error"]
        else:
            out.update(logged_step_peak_bytes=steps[1]["peak_rss_bytes"],
                       unlogged_step_peak_bytes=_steps(unlogged)[1]["peak_rss_bytes"])
            out["logged_vs_unlogged"] = (out["logged_step_peak_bytes"]
                                         / out["unlogged_step_peak_bytes"])
    return out


def _peer_spec(row: Row, rs: RealScaleSettings, case: Path, trainer: str, loss: str) -> dict:
    return dict(trainer=trainer, loss=loss, model_config=_model_config(row.model, rs),
                lora_r=row.lora_r, gradient_checkpointing=row.checkpointing,
                rows=str(case / "pairs.jsonl"), out_dir=str(case / f"out-{trainer}"), steps=2,
                global_batch=1, micro_batch=1, max_length=row.seq_len, beta=BETA[loss],
                gamma=SIMPO_GAMMA, threads=rs.threads, liger=False)


def peer(row: Row, rs: RealScaleSettings, case: Path, trainer: str, loss: str, impl: str,
         budget: int | None = None) -> dict:
    """A peer's row: 2 steps of ``row`` through ``trainer`` (item 6 of the module doc)."""
    out = _base(row, rs, "trainer", trainer, loss, impl)
    out["guard_bytes"] = _guard(rs.budget_bytes if budget is None else budget)
    result, peak = _launch(_peer_spec(row, rs, case, trainer, loss), case / f"work-{trainer}",
                           out["guard_bytes"], rs)
    if "error" in result:
        return {**out, **_failed(result, peak)}
    step = result["step_times_s"][-1]
    return {**out, "time_s": step, "tokens_per_s": 2 * row.seq_len / step, "peak_bytes": peak,
            "step_times_s": result["step_times_s"], "first_step_s": result["first_step_s"],
            "reference_s": result["reference_s"],
            "attn_implementation": result["attn_implementation"]}


def _largest(fits, lo: int, hi: int, grid: int) -> int | None:
    """The largest multiple of ``grid`` strictly between ``lo`` and ``hi`` for which the
    monotone ``fits`` holds (None: none)."""
    a, b = lo // grid + 1, (hi - 1) // grid
    if a > b or not fits(a * grid):
        return None
    while a < b:
        m = (a + b + 1) // 2
        a, b = (m, b) if fits(m * grid) else (a, m - 1)
    return a * grid


def search(measure, predictor, seed, budget: int, grid: int, limit: int, tries: int,
           too_long: int | None = None):
    """The longest T on ``grid`` (up to ``limit``) whose run fits ``budget``. ``seed``: a
    measured ``(T, peak bytes)`` known to fit, or None; ``too_long``: a T known not to fit,
    or None. Each candidate lies above every T that
    fitted and below every T that did not: after a fit (or from the seed), the largest T that
    ``predictor(point)`` (bytes as a function of T, calibrated on the last fit, ``point``; or
    None: no prediction) puts within the budget; after an out-of-memory, or without a
    prediction, the midpoint. ``measure(T)`` confirms it (a dict with ``status``, and
    ``peak_bytes`` when "ok"); a timeout or failure ends the search, as do ``tries`` runs or
    no candidate left. Returns the outcomes, the longest T that fitted (0: none) and the
    shortest that did not."""
    lo, hi, point, failed, tried = 0, min(limit + grid, too_long or limit + grid), seed, False, []
    if seed is not None:
        lo = seed[0]
    for _ in range(tries):
        predict = None if failed else predictor(point)
        if predict is None:
            t = (lo + hi) // 2 // grid * grid
            t = t if lo < t < hi else None
        else:
            t = _largest(lambda n, f=predict: f(n) <= budget, lo, hi, grid)
        if t is None:
            break
        outcome = {"seq_len": t, **measure(t)}
        if predict is not None:
            outcome["predicted_bytes"] = predict(t)
        tried.append(outcome)
        if outcome["status"] == "ok" and outcome["peak_bytes"] <= budget:
            lo, point, failed = t, (t, outcome["peak_bytes"]), False
        elif outcome["status"] == "oom":
            hi, failed = t, True
        else:
            break
    return tried, lo, hi


def longest(rs: RealScaleSettings, rows: list[dict], work: Path) -> list[dict]:
    """Item 5: the longest REDI pair within ``long_budget_bytes`` at ``long_model``, ours
    and TRL DPOTrainer's (see the module docstring)."""
    from redi.train.model_spec import scratch_config

    budget, grid = rs.long_budget_bytes, rs.long_resolution
    limit = scratch_config(_model_config(rs.long_model, rs)).max_position_embeddings
    limit = limit // grid * grid

    def case(t: int) -> Path:
        path = work / f"T{t}"
        if not path.is_dir():
            _write_data(path, rs, t)
        return path

    def spec(t: int, checkpointing: bool = False, data: Path = work) -> dict:
        return _ours_spec(Row(rs.long_model, t, checkpointing=checkpointing), rs, data, "run",
                          ["max_steps=3", "save_every=0"], stop_after=2)

    @functools.cache
    def plan_of(t: int) -> int:
        return planned(spec(t)).peak

    def measure_ours(t: int) -> dict:
        result, peak = _launch(spec(t, data=case(t)), case(t) / "work-ours", _guard(budget), rs)
        if "error" in result:
            return _failed(result, peak)
        step = _steps(result)[-1]["seconds"]
        return {"status": "ok", "peak_bytes": _training_peak(result), "time_s": step,
                "tokens_per_s": 2 * t / step, "attn_implementation": result["attn_implementation"]}

    def measure_trl(t: int) -> dict:
        r = peer(Row(rs.long_model, t), rs, case(t), "trl-dpo", "dpo", "", budget)
        return {k: r.get(k) for k in ("status", "error", "peak_bytes", "peak_bytes_at_failure",
                                      "time_s", "tokens_per_s", "attn_implementation")}

    def plan_predictor(point):
        """The plan, scaled by measured / planned at ``point``."""
        scale = 1.0 if point is None else point[1] / plan_of(point[0])
        return lambda t: plan_of(t) * scale

    def line_predictor(point):
        """A line from the plan's weights, gradients, moments and runtime (the same model
        and optimizer) at T = 0 through the measured ``point``; None without one."""
        if point is None:
            return None
        parts = planned(spec(point[0])).parts
        static = sum(parts[k] for k in ("runtime", "weights", "gradients", "optimizer (AdamW)"))
        return lambda t: static + (point[1] - static) * t / point[0]

    def known(trainer: str):
        """What the rows above say of ``trainer`` at this model (full fine-tuning): the
        longest T that fitted the budget without checkpointing, as (T, peak), and the shortest
        that ran out of memory under a guard of at least the budget or ran past the budget
        (with checkpointing or not: checkpointing only lowers the peak)."""
        same = [r for r in rows if r["trainer"] == trainer and r["model"] == rs.long_model
                and r["kind"] == "trainer" and not r["lora_r"]]
        fits = [(r["seq_len"], r["peak_bytes"]) for r in same if r["status"] == "ok"
                and not r["activation_checkpointing"] and r["peak_bytes"] <= budget]
        failed = [r["seq_len"] for r in same if (r["status"] == "oom" and r["guard_bytes"]
                                                 >= budget) or (r["status"] == "ok"
                                                                and r["peak_bytes"] > budget)]
        return max(fits, default=None), min(failed, default=None)

    out = []
    for trainer, loss, impl, measure, predictor in (
            ("redi-train", "redi", "redi train", measure_ours, plan_predictor),
            ("trl-dpo", "dpo", "TRL DPOTrainer (ref precomputed)", measure_trl, line_predictor)):
        if not _chosen(rs, trainer):
            continue
        start, too_long = known(trainer)
        tried, lo, hi = search(measure, predictor, start, budget, grid, limit, rs.long_tries,
                               too_long)
        fit = next((o for o in tried if o["seq_len"] == lo), {})
        if start is not None and lo == start[0]:  # no longer run fitted: the row's figures
            fit = next(r for r in rows if r["trainer"] == trainer and r["seq_len"] == lo
                       and r["kind"] == "trainer" and r["model"] == rs.long_model
                       and not r["lora_r"] and not r["activation_checkpointing"])
        row = {**_base(Row(rs.long_model, lo), rs, "longest", trainer, loss, impl),
               "status": "ok" if lo else "none fits", "budget_bytes": budget,
               "peak_bytes": fit.get("peak_bytes"), "time_s": fit.get("time_s"),
               "tokens_per_s": fit.get("tokens_per_s"),
               "attn_implementation": fit.get("attn_implementation"), "tries": tried,
               "longer_failed_at": hi if hi <= limit else None, "positions_limit": limit,
               "seed_seq_len": None if start is None else start[0], "known_too_long": too_long}
        if trainer == "redi-train":
            row["planned_longest_with_checkpointing"] = _largest(
                lambda n: planned(spec(n, checkpointing=True)).peak <= budget, 0, limit + grid,
                grid)
        out.append(row)
        print(f"  longest {impl}: T={lo} ({len(tried)} runs)", flush=True)
    return out


def _chosen(rs: RealScaleSettings, trainer: str) -> bool:
    return not rs.trainers or trainer in rs.trainers


def run_real_scale(settings: Settings, rs: RealScaleSettings | None = None) -> list[dict]:
    rs = rs or PROFILES["quick" if settings.profile == "quick" else "full"]
    if settings.threads:
        rs = dataclasses.replace(rs, threads=settings.threads)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="redi-real-scale-") as tmp:
        for i, row in enumerate(rs.rows):
            case = Path(tmp) / f"row{i}"
            _write_data(case, rs, row.seq_len)
            done = len(rows)
            if _chosen(rs, "redi-train"):
                rows.append(ours(row, rs, case))
            rows += [peer(row, rs, case, *entry) for entry in PEERS if _chosen(rs, entry[0])]
            shutil.rmtree(case)  # checkpoints and exports: gigabytes at the real shapes
            for r in rows[done:]:
                print(f"  {r['model']} {r['mode']} T={r['seq_len']} {r['impl']}: {r['status']}"
                      f"{'' if r['error'] is None else ' ' + r['error']}", flush=True)
        if rs.long_tries:
            rows += longest(rs, rows, Path(tmp) / "longest")
    add_ratios(rows, "redi", lambda r: r["trainer"] == "redi-train",
               match=("kind", "model", "seq_len", "lora_r", "activation_checkpointing"),
               keys=("tokens_per_s", "peak_bytes"))
    return rows


def _gib(value) -> str:
    return "-" if value is None else f"{value / GiB:.2f}"


def _num(value, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _shape(row: dict) -> str:
    return f"{row['model']} {row['mode']}{' +ckpt' if row['activation_checkpointing'] else ''}"


def _status(row: dict) -> str:
    return "ok" if row["status"] == "ok" else row["error"]


def _logits(row: dict) -> str:
    if row.get("export_logits_match") is None:
        return "-"
    if row["export_logits_equal"]:
        return "equal"
    diff = f"max abs diff {row['export_logits_max_abs_diff']:.2e}"
    return f"merged LoRA, {diff}" if row["export_logits_match"] else f"DIFFER: {diff}"


def markdown(settings: Settings, rows: list[dict], env: dict) -> str:
    """The section's results as three markdown tables: ``redi train`` at each row, the
    peers, the longest pair."""
    lines = [f"# real-scale: {_describe(settings)}", "",
             f"{env['date']}, {env['cpu']}, {env['torch_threads']} threads, load average "
             f"{env['load_average'][0]:.2f} at the start, torch {env['torch']}, transformers "
             f"{env['transformers']}, commit {env['commit']}{' (dirty)' if env['dirty'] else ''}"
             ". Peak RSS with `MALLOC_MMAP_THRESHOLD_=65536`; GiB = 2^30 bytes.", "",
             "## redi train", "",
             "| model | T | status | planned GiB | peak RSS GiB | plan / measured | tokens/s "
             "| first step s | checkpoint GiB (s) | resumed loss = uninterrupted | export GiB "
             "(s) | reloaded export's logits | logged / unlogged step peak | "
             "attention |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---|"]
    trained = [r for r in rows if r["kind"] == "trainer"]
    for r in (r for r in trained if r["trainer"] == "redi-train"):
        lines.append(
            f"| {_shape(r)} | {r['seq_len']} | {_status(r)} | {_gib(r.get('planned_bytes'))} | "
            f"{_gib(r['peak_bytes'])} | {_num(r.get('plan_vs_measured'), '{:.3f}')} | "
            f"{_num(r['tokens_per_s'], '{:.1f}')} | {_num(r['first_step_s'], '{:.1f}')} | "
            f"{_gib(r.get('checkpoint_bytes'))} ({_num(r.get('checkpoint_s'), '{:.1f}')}) | "
            f"{r.get('resume_loss_equal', '-')} ({_num(r.get('resumed_loss'), '{:.6f}')}) | "
            f"{_gib(r.get('export_bytes'))} ({_num(r.get('export_s'), '{:.1f}')}) | "
            f"{_logits(r)} | "
            f"{_num(r.get('logged_vs_unlogged'), '{:.4f}')} | "
            f"{r['attn_implementation'] or '-'} |")
    lines += ["", "Peak RSS: set-up and the 2 steps (what the plan predicts; the checkpoint and "
              "export have their own, in the JSON). Resumed: the step-2 loss of a run resumed "
              "from the step-1 checkpoint. Export: reloaded with `AutoModelForCausalLM` in a "
              "new process, logits on one batch against the trained model's (a LoRA export "
              "is merged, W + s B A, so equal up to rounding). Logged / unlogged: step 2's peak "
              "RSS with and without `update_norm` and the other metrics. Attention "
              "`redi_packed_sdpa`: redi's sdpa wrapper, which runs sdpa itself on these padded "
              "(unpacked) one-pair batches.",
              "", "## Peers (same model, pair, LoRA and checkpointing)", "",
              "| model | T | trainer | status | tokens/s | x redi train | peak RSS GiB | "
              "x redi train | first step s | attention |",
              "|---|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for r in trained:
        lines.append(
            f"| {_shape(r)} | {r['seq_len']} | {r['impl']} | {_status(r)} | "
            f"{_num(r['tokens_per_s'], '{:.1f}')} | "
            f"{_num(r.get('tokens_per_s_vs_redi'), '{:.2f}')} | "
            f"{_gib(r['peak_bytes'] or r.get('peak_bytes_at_failure'))} | "
            f"{_num(r.get('peak_bytes_vs_redi'), '{:.2f}')} | "
            f"{_num(r['first_step_s'], '{:.1f}')} | {r['attn_implementation'] or '-'} |")
    longest_rows = [r for r in rows if r["kind"] == "longest"]
    if longest_rows:
        budget = _gib(longest_rows[0]["budget_bytes"])
        lines += ["", f"## Longest REDI pair whose 2 steps fit {budget} GiB (no activation "
                      "checkpointing)", "",
                  "| trainer | longest T that fitted | peak RSS GiB | tokens/s | did not fit at "
                  "| runs (T: outcome) | attention |", "|---|---:|---:|---:|---:|---|---|"]
        for r in longest_rows:
            runs = "; ".join(f"{o['seq_len']}: {o['status']} "
                             f"{_gib(o.get('peak_bytes') or o.get('peak_bytes_at_failure'))} GiB"
                             for o in r["tries"])
            lines.append(f"| {r['impl']} | {r['seq_len'] or '-'} | {_gib(r['peak_bytes'])} | "
                         f"{_num(r['tokens_per_s'], '{:.1f}')} | "
                         f"{r['longer_failed_at'] or '-'} | {runs} | "
                         f"{r['attn_implementation'] or '-'} |")
        ckpt = [r["planned_longest_with_checkpointing"] for r in longest_rows
                if "planned_longest_with_checkpointing" in r]  # when ours was searched
        lines += [f"\nWith activation checkpointing the plan puts ours at T = {t} (the model's "
                  f"positions: {longest_rows[0]['positions_limit']}); planned, not measured."
                  for t in ckpt]
    return "\n".join(lines) + "\n"


def _describe(settings: Settings) -> str:
    rs = PROFILES["quick" if settings.profile == "quick" else "full"]
    shrink = f", shrunk to {rs.shrink}" if rs.shrink else ""
    return (f"CPU fp32, random weights{shrink}, one REDI pair per step (prompt "
            f"{rs.prompt_len} + response = T), 2 steps, rows within "
            f"{rs.budget_bytes / GiB:.0f} GiB, longest pair within "
            f"{rs.long_budget_bytes / GiB:.0f} GiB")


SECTION = Section(
    name="real-scale",
    describe=_describe,
    run=run_real_scale,
    columns=(Column("kind", "kind", left=True), Column("model", "model", left=True),
             Column("mode", "mode", left=True), Column("T", "seq_len"),
             Column("trainer", "impl", left=True), Column("status", "status", left=True),
             Column("planned GiB", "planned_bytes", "{:.2f}", scale=2**-30),
             Column("peak GiB", "peak_bytes", "{:.2f}", scale=2**-30),
             Column("plan/peak", "plan_vs_measured", "{:.3f}"),
             Column("tokens/s", "tokens_per_s", "{:.1f}"),
             Column("x redi tok/s", "tokens_per_s_vs_redi", "{:.2f}"),
             Column("x redi mem", "peak_bytes_vs_redi", "{:.2f}"),
             Column("first step s", "first_step_s", "{:.1f}"),
             Column("error", "error", left=True)),
    plotted=False,
    markdown=markdown)


def main(argv=None) -> int:
    """Chosen rows of the section (``--rows`` indices into the profile's rows), with or
    without the longest-pair search: ``python bench/real_scale.py --rows 0 --no-longest
    --out DIR`` writes ``DIR/real-scale[-quick]-rows-0.{json,md}`` and prints the table."""
    import argparse

    from environment import environment
    from report import table, write_json
    from settings import profile

    p = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, nargs="*",
                   help="indices into the rows (default: all; none: only the search)")
    p.add_argument("--longest", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--quick", action="store_true", help="the quick profile's small shapes")
    p.add_argument("--trainers", nargs="+", choices=["redi-train", *(t for t, _, _ in PEERS)],
                   help="run only these trainers on the rows (default: all)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    settings = profile("quick" if args.quick else "full", "cpu")
    rs = PROFILES[settings.profile]
    chosen = range(len(rs.rows)) if args.rows is None else args.rows
    rs = dataclasses.replace(rs, rows=tuple(rs.rows[i] for i in chosen),
                             long_tries=rs.long_tries if args.longest else 0,
                             trainers=tuple(args.trainers or ()))
    env = environment("cpu")
    rows = run_real_scale(settings, rs)
    args.out.mkdir(parents=True, exist_ok=True)
    rows_part = f"-rows-{'-'.join(map(str, chosen))}" if len(chosen) else ""  # --rows alone: none
    stem = ("real-scale" + ("-quick" if args.quick else "") + rows_part
            + ("-longest" if args.longest else "")
            + "".join(f"-{t}" for t in rs.trainers))
    write_json(args.out / f"{stem}.json", env, settings, rows)
    (args.out / f"{stem}.md").write_text(markdown(settings, rows, env))
    print(table(SECTION, settings, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
