"""Smoke test of the bench's ``trainer-peers`` section at tiny sizes: ``redi train`` and TRL's
DPOTrainer each give a row with throughput, peak RSS and the reference pass's time; a
configuration that cannot run (TRL's Liger path without a GPU, a missing integration) is a
row saying so, never left out. The full section: ``python bench/run.py --sections
trainer-peers`` (results in bench/results/cpu-2026-12-02/trainer-peers-*)."""

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))

import trainer_peers  # noqa: E402
from settings import profile  # noqa: E402

pytest.importorskip("trl")
pytestmark = pytest.mark.slow  # three trainer processes (25 s on 2 quiet cores)


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_rows_for_every_config_including_failures():
    by_label = {label: (trainer, loss, label, fields)
                for trainer, loss, label, fields in trainer_peers.CONFIGS}
    chosen = [by_label[label] for label in (
        "redi train (ref cached)", "TRL DPOTrainer (ref precomputed)",
        "TRL DPOTrainer (ref precomputed, liger)", "redi REDITrainer (TRL)")]
    rows = trainer_peers.run_peers(profile("quick", "cpu"), configs=chosen)
    assert [r["impl"] for r in rows] == [c[2] for c in chosen]
    ours, trl, liger, integration = rows
    for row in (ours, trl):
        assert row["status"] == "ok", row
        assert _positive(row["tokens_per_s"]) and _positive(row["peak_bytes"]), row
        assert _positive(row["reference_s"]), row  # both are DPO with a cached reference
        assert len(row["step_times_s"]) == trainer_peers.PROFILES["quick"].steps
    assert ours["tokens_per_s_vs_redi"] is None  # no REDI row in this subset: no ratio
    if not torch.cuda.is_available():
        assert liger["status"] == "failed" and liger["error"], liger
        assert liger["peak_bytes"] is None and _positive(liger["peak_bytes_at_failure"])
    assert integration["status"] in ("ok", "failed", "not available")
    if integration["status"] != "ok":
        assert integration["error"]
