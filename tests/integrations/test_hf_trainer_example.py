"""The documented example: REDI inside a transformers.Trainer subclass trains a tiny Qwen2."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).parents[2] / "examples" / "hf_trainer_redi.py"


def load_example():
    spec = importlib.util.spec_from_file_location("hf_trainer_redi", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_collate_shifts_labels_onto_response_tokens():
    example = load_example()
    batch = example.collate_pairs([{"prompt": [5, 6], "chosen": [7, 1], "rejected": [8, 9, 1]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1, 0], [5, 6, 8, 9, 1]]
    assert batch["labels"].tolist() == [[-100, 7, 1, -100, -100], [-100, 8, 9, 1, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def test_redi_trainer_loss_decreases():
    example = load_example()
    losses = example.main(max_steps=30)
    assert len(losses) == 30 and all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, losses


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch():
    """Under torchrun the Trainer wraps the model in DDP: 2 processes x 4 pairs must log the
    losses of 1 process x 8 pairs (the same pairs each step), which needs compute_loss to go
    through the wrapper's forward so that gradients are averaged across processes."""
    def losses(launcher, batch):
        result = subprocess.run([*launcher, str(EXAMPLE), "6", str(batch)], capture_output=True,
                                text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert result.returncode == 0, result.stderr[-3000:]
        return [float(line.split()[-1]) for line in result.stdout.splitlines()
                if line.startswith("step")]

    one = losses([sys.executable], 8)
    two = losses([sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node=2"], 4)
    assert len(one) == 6 and two == pytest.approx(one, abs=2e-4)  # printed to 4 decimals
