"""The REDI trainer for TRL on a tiny Qwen2 and the built-in task's pairs; also run alone
(one process) or under torchrun (2 processes, gloo, DDP) to write the gradients of the first
optimizer step:

    python tests/workers/trl_step_grads.py OUT.pt 4
    torchrun --nproc_per_node 2 tests/workers/trl_step_grads.py OUT.pt 2

(pairs per process as the last argument; the global batch is the same 4 pairs either way).
"""

import os
import sys
import tempfile

import torch
from datasets import Dataset
from transformers import Qwen2Config, Qwen2ForCausalLM, TrainerCallback

from redi.data.builtin_task import generate_test_pairs
from redi.data.tokenizer import load_tokenizer


def tiny_model(vocab: int, seed: int = 0, tied: bool = False):
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=tied))


def builtin_pairs(n: int, conversational: bool = True) -> Dataset:
    """TRL preference rows from the built-in task (chat messages, or their plain text)."""
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in generate_test_pairs(n)]
    if not conversational:
        rows = [{k: v[0]["content"] for k, v in r.items()} for r in rows]
    return Dataset.from_list(rows)


def trainer_args(output_dir, **overrides):
    from redi.integrations.trl import REDIConfig

    values = dict(output_dir=output_dir, per_device_train_batch_size=4, report_to=[],
                  use_cpu=True, logging_steps=1, save_strategy="no", disable_tqdm=True,
                  learning_rate=1e-3, max_grad_norm=0.0, lr_scheduler_type="constant", bf16=False,
                  dataset_num_proc=None, seed=0)
    return REDIConfig(**{**values, **overrides})


class SaveFirstStepGrads(TrainerCallback):
    def __init__(self, path, model):
        self.path, self.model = path, model

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if state.global_step == 0 and int(os.environ.get("RANK", "0")) == 0:
            torch.save({n: p.grad.clone() for n, p in self.model.named_parameters()},
                       self.path)


def main(out, pairs_per_process):
    from redi.integrations.trl import REDITrainer

    tokenizer = load_tokenizer()
    model = tiny_model(len(tokenizer))
    with tempfile.TemporaryDirectory() as tmp:
        args = trainer_args(tmp, max_steps=1, per_device_train_batch_size=pairs_per_process)
        trainer = REDITrainer(model, args=args, train_dataset=builtin_pairs(4),
                              processing_class=tokenizer)
        trainer.add_callback(SaveFirstStepGrads(out, model))
        trainer.train()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
