"""The bench's ``real-scale`` section (issue 27) at a tiny shape: a ``redi train`` row gives
every figure (plan against measured peak RSS, tokens/s, time to the first step, checkpoint,
resume, export and its reloaded logits, a logged step's peak RSS against an unlogged one's);
a row that cannot fit is recorded as such before anything is loaded; a worker past its memory
guard or time limit is killed and recorded; the longest-pair search. The section itself:
``python bench/run.py --sections real-scale`` (``--quick``: the same at small shapes)."""

import dataclasses
import math
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))

import real_scale  # noqa: E402
import trainer_peers  # noqa: E402
from settings import profile  # noqa: E402

TINY = dataclasses.replace(
    real_scale.PROFILES["quick"], prompt_len=8, probe_tokens=8, threads=1, timeout_s=300,
    shrink=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, vocab_size=512, max_position_embeddings=256))


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow  # five worker processes (about a minute on 2 shared cores)
def test_a_row_has_every_figure(tmp_path):
    pytest.importorskip("trl")
    case = tmp_path / "case"
    real_scale._write_data(case, TINY, 64)
    row = real_scale.ours(real_scale.Row("qwen2.5-0.5b", 64, compare_logging=True), TINY, case)

    assert row["status"] == "ok" and row["error"] is None, row
    for key in ("planned_bytes", "peak_bytes", "process_peak_bytes", "time_s", "tokens_per_s",
                "first_step_s", "checkpoint_bytes", "checkpoint_s", "checkpoint_peak_bytes",
                "export_bytes", "export_s", "export_peak_bytes", "logged_step_peak_bytes",
                "unlogged_step_peak_bytes"):
        assert _positive(row[key]), (key, row[key])
    assert row["tokens_per_s"] == pytest.approx(2 * 64 / row["time_s"])
    assert len(row["step_times_s"]) == len(row["step_peak_bytes"]) == 2
    assert row["peak_bytes"] == max(row["step_peak_bytes"]) <= row["process_peak_bytes"]
    assert 0.5 < row["plan_vs_measured"] < 2  # the plan's runtime term dominates at this size
    assert row["plan_vs_measured"] == row["planned_bytes"] / row["peak_bytes"]
    # the step-2 loss of the run resumed from the step-1 checkpoint is the uninterrupted one's
    assert math.isfinite(row["uninterrupted_loss"]) and row["resume_error"] is None
    assert row["resumed_loss"] == row["uninterrupted_loss"] and row["resume_loss_equal"]
    # the export, reloaded with AutoModelForCausalLM, gives the trained model's logits
    assert row["export_reload_error"] is None and _positive(row["export_logits_max_abs"])
    assert row["export_logits_equal"] is True and row["export_logits_max_abs_diff"] == 0.0
    assert row["export_logits_match"] is True
    assert 0.9 < row["logged_vs_unlogged"] < 1.1
    assert row["attn_implementation"].endswith("sdpa")
    assert "| equal |" in real_scale.markdown(
        profile("quick", "cpu"), [row], _env())

    # a peer through the same worker, with LoRA adapters (TRL's DPOTrainer, reference
    # precomputed with the adapters off)
    lora = real_scale.Row("qwen2.5-0.5b", 64, lora_r=4)
    peer = real_scale.peer(lora, TINY, case, "trl-dpo", "dpo", "TRL DPOTrainer")
    assert peer["status"] == "ok", peer
    assert _positive(peer["tokens_per_s"]) and _positive(peer["peak_bytes"])
    assert _positive(peer["first_step_s"]) and _positive(peer["reference_s"])


def _env():
    return dict(date="today", cpu="cpu", torch_threads=1, load_average=(0.0,), torch="t",
                transformers="t", commit="c", dirty=False)


def test_a_row_that_cannot_fit_is_recorded_before_anything_is_loaded(tmp_path, monkeypatch):
    """The 1.5B LoRA pair at T=4096 without activation checkpointing plans 52 GiB: no
    worker starts, no data is read, the row says so."""
    monkeypatch.setattr(real_scale, "run_worker",
                        lambda *args, **kwargs: pytest.fail("a worker was started"))
    rs = real_scale.PROFILES["full"]
    row = real_scale.ours(real_scale.Row("qwen2.5-math-1.5b", 4096, lora_r=16), rs, tmp_path)
    assert row["status"] == "does not fit" and row["planned_bytes"] > row["guard_bytes"]
    assert re.fullmatch(r"does not fit \(planned \d+\.\d\d GiB; the row may use \d+\.\d\d GiB\)",
                        row["error"]), row["error"]
    assert f"{row['planned_bytes'] / 2**30:.2f} GiB" in row["error"]
    assert row["peak_bytes"] is None and row["tokens_per_s"] is None
    assert not any(tmp_path.iterdir())  # nothing written, nothing loaded
    assert row["error"] in real_scale.markdown(profile("full", "cpu"), [row], _env())


def test_trainers_limits_a_run_to_those_named(monkeypatch):
    """``--trainers trl-dpo trl-cpo``: a row's peers again without ``redi train``'s runs
    (and the longest-pair search of those named only)."""
    ran = []

    def run(row, trainer):
        ran.append(trainer)
        return dict(trainer=trainer, kind="trainer", model=row.model, mode="full", impl=trainer,
                    seq_len=row.seq_len, status="ok", error=None, lora_r=None,
                    activation_checkpointing=False, tokens_per_s=1.0, peak_bytes=1)

    monkeypatch.setattr(real_scale, "_write_data", lambda case, rs, seq_len: case.mkdir())
    monkeypatch.setattr(real_scale, "ours", lambda row, rs, case: run(row, "redi-train"))
    monkeypatch.setattr(real_scale, "peer", lambda row, rs, case, trainer, *_: run(row, trainer))
    rs = dataclasses.replace(TINY, rows=(real_scale.Row("qwen2.5-0.5b", 64),), long_tries=0,
                             trainers=("trl-dpo", "trl-cpo"))
    rows = real_scale.run_real_scale(profile("quick", "cpu"), rs)
    assert ran == ["trl-dpo", "trl-cpo"] and [r["trainer"] for r in rows] == ran
    searched = []
    monkeypatch.setattr(real_scale, "search", lambda measure, *args: searched.append(
        measure.__name__) or ([], 0, 64))
    monkeypatch.setattr(real_scale, "planned", lambda spec: type("P", (), {"peak": 1}))
    rows = real_scale.run_real_scale(profile("quick", "cpu"), dataclasses.replace(
        rs, trainers=("trl-dpo",), long_tries=1))
    assert searched == ["measure_trl"] and [r["kind"] for r in rows] == ["trainer", "longest"]
    ran.clear()
    real_scale.run_real_scale(profile("quick", "cpu"), dataclasses.replace(rs, trainers=()))
    assert ran == ["redi-train", "trl-dpo", "trl-cpo", "redi-trl"]


def test_the_search_starts_below_a_row_that_ran_past_its_budget(monkeypatch, tmp_path):
    """A row that ran but used more than the search's budget bounds the search from above,
    as an out-of-memory row under a guard of at least the budget does."""
    calls = {}
    monkeypatch.setattr(real_scale, "search", lambda measure, predictor, start, budget, grid,
                        limit, tries, too_long: calls.setdefault(measure.__name__, (
                            start, too_long)) and ([], 0, too_long or 10**9))
    monkeypatch.setattr(real_scale, "planned", lambda spec: type("P", (), {"peak": 1}))
    rs = dataclasses.replace(TINY, long_tries=1)
    row = dict(kind="trainer", model=rs.long_model, lora_r=None, activation_checkpointing=False,
               seq_len=128, status="ok", guard_bytes=rs.long_budget_bytes + 1)
    rows = [{**row, "trainer": "redi-train", "peak_bytes": rs.long_budget_bytes - 1},
            {**row, "trainer": "trl-dpo", "peak_bytes": rs.long_budget_bytes + 1}]
    real_scale.longest(rs, rows, tmp_path)
    assert calls == {"measure_ours": ((128, rs.long_budget_bytes - 1), None),
                     "measure_trl": (None, 128)}


@pytest.mark.parametrize("limits,stopped,message", [
    (dict(guard_bytes=64 * 2**20), "oom", "past the 0.06 GiB guard; killed"),
    (dict(timeout_s=0.2), "timeout", "ran longer than 0 s; killed")])
def test_a_worker_past_its_limits_is_killed_and_recorded(tmp_path, limits, stopped, message):
    """Any worker passes 64 MiB of resident set while it imports torch."""
    spec = dict(trainer="reload", model_dir=str(tmp_path / "none"), threads=1,
                logits_file=str(tmp_path / "none.safetensors"))
    result, peak = trainer_peers.run_worker(spec, tmp_path / "work", **limits)
    assert result["stopped"] == stopped and result["error"].endswith(message), result
    assert peak > 0
    if stopped == "oom":
        assert peak > 64 * 2**20


def _fake_runs(true_peak, budget):
    runs = []

    def measure(t):
        runs.append(t)
        peak = true_peak(t)
        return {"status": "ok", "peak_bytes": peak} if peak <= budget else {"status": "oom"}

    return runs, measure


def test_search_calibrates_its_prediction_and_bisects_after_an_oom():
    def true_peak(t):
        return 100 + 2 * t  # budget 1000: T <= 450, 448 on a grid of 16

    def predictor(point):  # 20 % low until calibrated on a measured fit
        if point is None:
            return lambda t: 0.8 * true_peak(t)
        return lambda t: true_peak(t) * point[1] / true_peak(point[0])

    runs, measure = _fake_runs(true_peak, 1000)
    tried, lo, hi = real_scale.search(measure, predictor, None, 1000, 16, 4096, tries=5)
    # 560 (predicted 0.8 x 1220) fails; the midpoint 272 fits; calibrated: 448; nothing
    # left between 448 and 560
    assert runs == [560, 272, 448] and (lo, hi) == (448, 560)
    assert [o["status"] for o in tried] == ["oom", "ok", "ok"]
    assert tried[0]["predicted_bytes"] == pytest.approx(0.8 * 1220)

    runs, measure = _fake_runs(true_peak, 1000)  # no prediction: bisection from the seed
    tried, lo, hi = real_scale.search(measure, lambda point: None, (128, 356), 1000, 16, 1024,
                                      tries=3)
    assert runs == [576, 352, 464] and (lo, hi) == (352, 464)  # bounded: 3 runs
    runs, measure = _fake_runs(true_peak, 1000)  # below a T known not to fit
    tried, lo, hi = real_scale.search(measure, lambda point: None, None, 1000, 16, 1024,
                                      tries=2, too_long=512)
    assert runs == [256, 384] and (lo, hi) == (384, 512)

    def timed_out(t):
        return {"status": "timeout", "error": "ran longer than 1 s; killed"}

    tried, lo, hi = real_scale.search(timed_out, predictor, None, 1000, 16, 4096, tries=5)
    assert len(tried) == 1 and lo == 0  # a run that did not finish ends the search
