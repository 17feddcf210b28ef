"""The documented example: REDI inside a transformers.Trainer subclass trains a tiny Qwen2."""

import importlib.util
from pathlib import Path

import torch

EXAMPLE = Path(__file__).parents[1] / "examples" / "hf_trainer_redi.py"


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
