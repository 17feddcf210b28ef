"""The main job (`make demo`) scaled down: every artifact is written, reruns resume, and
Stage 2 moves the held-out log-probs of correct vs incorrect traces the expected way."""

import json

import pytest

from redi.demo import QUICK, run_demo

pytestmark = pytest.mark.slow


def test_quick_demo_pipeline(tmp_path, capsys):
    per_seed = run_demo(tmp_path, seeds=[0], compare=False, size=QUICK)
    rows = per_seed[0]["rows"]
    assert set(rows) == {"sft", "redi"}
    # REDI raises correct traces relative to incorrect ones on pairs it never saw.
    assert rows["redi"]["margin"] > rows["sft"]["margin"]
    for name in ("sft", "redi"):
        assert (tmp_path / "seed0" / name / "final" / "model.safetensors").is_file()
        assert (tmp_path / "seed0" / "eval" / name / "summary.json").is_file()
        assert 0.0 <= rows[name]["pass@1"] <= 1.0
    assert (tmp_path / "seed0" / "redi" / "metrics.jsonl").is_file()
    assert (tmp_path / "stage2_curves.png").stat().st_size > 10_000
    table = (tmp_path / "results.md").read_text()
    assert "| SFT only |" in table and "| REDI (alpha 0.8) |" in table
    assert json.loads((tmp_path / "results.json").read_text())["0"]["rows"]["redi"]
    first = capsys.readouterr().out
    assert "held-out pass@1" in first
    # A rerun resumes: nothing is trained or sampled again.
    samples = (tmp_path / "seed0" / "eval" / "redi" / "samples.jsonl").read_text()
    again = run_demo(tmp_path, seeds=[0], compare=False, size=QUICK)
    assert again[0]["rows"] == rows
    assert (tmp_path / "seed0" / "eval" / "redi" / "samples.jsonl").read_text() == samples
    assert "Stage 1 (SFT)" in capsys.readouterr().out
