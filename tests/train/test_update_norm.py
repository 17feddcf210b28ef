"""``update_norm`` without a copy of the weights: ``step_with_update_norm`` steps AdamW one
parameter at a time, and must make the very step of one ``optimizer.step()`` and log the
norm of the change that a full snapshot measures (weight decay, LoRA, bf16 weights, and
FSDP2 shards over two processes)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_lora import tiny_lm

from redi.train import lora
from redi.train.config import TrainConfig
from redi.train.step_metrics import step_with_update_norm

REPO = Path(__file__).resolve().parents[2]


def snapshot_norm_step(optimizer, model) -> float:
    """The definition: keep every trained parameter, step, take the norm of the change."""
    trained = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trained]
    optimizer.step()
    return sum(float(torch.linalg.vector_norm(p.detach() - b).double() ** 2)
               for p, b in zip(trained, before)) ** 0.5


def lora_lm():
    return lora.apply_lora(tiny_lm(), TrainConfig(lora_r=4))


@pytest.mark.parametrize("make,dtype,weight_decay", [
    (tiny_lm, torch.float32, 0.0), (tiny_lm, torch.float32, 0.1),
    (tiny_lm, torch.bfloat16, 0.1), (lora_lm, torch.float32, 0.1)])
def test_update_norm_is_the_snapshots_and_the_step_is_unchanged(make, dtype, weight_decay):
    (model, optimizer), (reference, reference_optimizer) = _equal_pairs(make, dtype,
                                                                       weight_decay)
    grads = [p.grad for p in model.parameters()]
    measured = step_with_update_norm(optimizer, model)
    expected = snapshot_norm_step(reference_optimizer, reference)
    assert expected > 0
    assert measured == pytest.approx(expected, rel=1e-6)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)
    assert [p.grad for p in model.parameters()] == grads  # the gradients are kept
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        for key, value in reference_optimizer.state.get(q, {}).items():
            assert torch.equal(optimizer.state[p][key], value), key


def _equal_pairs(make, dtype, weight_decay):
    """Two equal models with equal AdamW states (one step taken) and equal gradients."""
    out = []
    for _ in range(2):
        model = make().to(dtype)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=1e-2, weight_decay=weight_decay)
        for seed in (0, 1):
            ids = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(seed))
            optimizer.zero_grad()
            model(input_ids=ids, labels=ids).loss.backward()
            if seed == 0:
                optimizer.step()
        out.append((model, optimizer))
    return out


@pytest.mark.slow
def test_update_norm_over_fsdp2_shards_is_the_full_changes_norm():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "tests" / "workers" / "fsdp_update_norm.py")],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "update_norm relative error" in result.stdout
