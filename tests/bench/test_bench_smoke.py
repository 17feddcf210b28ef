"""CI smoke test of the benchmark: ``python bench/run.py --quick`` into a temporary directory.

Run as a subprocess, as a user would: the benchmark changes glibc's allocator settings for
its memory measurement (``bench/memory.py``), which must not leak into the test session.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_run_writes_complete_results(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    [json_path] = tmp_path.glob("*-quick.json")
    assert json_path.with_suffix(".csv").stat().st_size > 0
    for section in ("loss", "step"):
        for metric in ("time", "memory"):
            png = json_path.with_name(f"{json_path.stem}-{section}-{metric}.png")
            assert png.read_bytes()[:4] == b"\x89PNG", png

    payload = json.loads(json_path.read_text())
    env = payload["environment"]
    assert env["device"] and env["torch"] and env["commit"]
    rows = payload["results"]
    assert {r["section"] for r in rows} == {"loss", "step", "max-seq", "trainer", "head"}
    for r in rows:
        if r["section"] not in ("max-seq", "head"):
            assert r["status"] == "ok" and _positive(r["time_s"]), r
        if r["section"] != "head":
            assert _positive(r["peak_bytes"]), r

    loss_impls = {(r["loss"], r["impl"]) for r in rows if r["section"] == "loss"}
    for loss in ("redi", "dpo", "simpo"):
        assert {(loss, "ours[torch]"), (loss, "naive")} <= loss_impls
    assert {("dpo", "liger(compiled=False)"), ("simpo", "liger(compiled=False)"),
            ("redi", "torch linear_cross_entropy"), ("floor", "3 matmuls")} <= loss_impls
    assert len({r["loss"] for r in rows if r["section"] == "step"}) == 4

    trainer = {r["loss"]: r for r in rows if r["section"] == "trainer"}
    assert set(trainer) == {"redi", "dpo (ref online)", "dpo (ref cached)", "simpo"}
    assert all(_positive(r["tokens_per_s"]) for r in trainer.values())

    longest = {r["impl"]: r["max_seq_len"] for r in rows if r["section"] == "max-seq"}
    assert longest["ours"] >= longest["naive"] > 0, longest

    head = {r["impl"]: r for r in rows if r["section"] == "head"}
    for impl in ("ours", "naive", "torch linear_cross_entropy", "liger SimPO (chunked, eager)"):
        r = head[impl]
        assert r["status"] == "ok" and r["max_seq_len"] > 0 and _positive(r["ms_per_token"]), r
        assert r["peak_bytes"] <= r["budget_bytes"], r
    assert head["ours"]["max_seq_len"] >= head["naive"]["max_seq_len"]
    assert head["cut-cross-entropy[torch_compile]"]["status"] == "skipped"  # not in --quick
    floor = head["3-matmul floor"]
    assert _positive(floor["ms_per_token"]) and floor["time_s_vs_floor"] == 1.0
    assert head["ours"]["time_s_vs_floor"] == head["ours"]["time_s"] / floor["time_s"]


@pytest.mark.slow
def test_head_time_section_times_the_head_alone(tmp_path):
    """``--sections head-time``: the time per token at the head, without the memory search."""
    done = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--sections",
                           "head-time", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [json_path] = tmp_path.glob("*-quick.json")
    rows = {r["impl"]: r for r in json.loads(json_path.read_text())["results"]}
    assert list(rows) == ["ours", "naive", "cut-cross-entropy[torch_compile]", "3-matmul floor"]
    assert {r["section"] for r in rows.values()} == {"head-time"}
    assert rows["cut-cross-entropy[torch_compile]"]["status"] == "skipped"  # not in --quick
    for impl in ("ours", "naive", "3-matmul floor"):
        r = rows[impl]
        assert r["status"] == "ok" and _positive(r["ms_per_token"]) and len(r["times_s"]) > 1, r
        assert "max_seq_len" not in r  # no search
    assert rows["ours"]["time_s_vs_floor"] == rows["ours"]["time_s"] / rows["3-matmul floor"][
        "time_s"]


def test_results_go_outside_the_source_tree_by_default():
    sys.path.insert(0, str(BENCH))
    import run

    assert run.parse_args([]).out == BENCH.parent / "runs" / "bench"
    assert run.parse_args(["--out", "x"]).out == Path("x")
