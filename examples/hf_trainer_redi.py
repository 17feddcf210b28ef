"""The fused REDI loss inside a Hugging Face ``transformers.Trainer``.

``compute_loss`` takes the last hidden state and the LM head's weight and bias from the
model's own forward (``redi.integrations.transformers.head_inputs``: ``logits_to_keep=1``,
so the logits of one position, not [tokens x vocab]) and hands them to
``redi.FusedLinearREDILoss``. Calling the forward of whatever ``model`` the Trainer passes
keeps DDP's gradient synchronization when ``torchrun`` runs it on several processes. For TRL
users, ``redi.integrations.trl`` does the same with TRL's preference datasets.
Batches are padded ``[2B, T]``: the B chosen sequences first, then the B rejected ones, with
labels already shifted (label t is the token position t predicts) and -100 on prompt and
padding.

Run it: ``python examples/hf_trainer_redi.py [max_steps [batch_per_process]]`` (or the
same under ``torchrun --nproc_per_node 2``) trains a tiny Qwen2 built from a config on
synthetic pairs and prints the loss.
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Trainer, TrainingArguments

import redi
from redi.integrations.transformers import head_inputs, logit_softcap, with_model_softcap
from redi.loss_defaults import REDI_ALPHA


class REDITrainer(Trainer):
    """A Trainer whose loss is REDI on the final hidden states, never on full logits."""

    def __init__(self, *args, alpha: float = REDI_ALPHA, **kwargs):
        super().__init__(*args, **kwargs)
        self.redi_loss = redi.FusedLinearREDILoss(alpha=alpha)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        hidden, weight, bias = head_inputs(model, allow_softcap=True,
                                           input_ids=inputs["input_ids"],
                                           attention_mask=inputs["attention_mask"])
        # a Gemma-style final_logit_softcapping of the model goes into the loss
        loss_fn = with_model_softcap(self.redi_loss, logit_softcap(model))
        loss, metrics = loss_fn(weight, hidden, inputs["labels"], bias)
        return (loss, metrics) if return_outputs else loss


def collate_pairs(pairs, pad_id=0):
    """[{prompt, chosen, rejected}: token-id lists] -> padded [2B, T] batch, chosen first."""
    rows = [(p["prompt"], p["chosen"]) for p in pairs] + [(p["prompt"], p["rejected"])
                                                          for p in pairs]
    width = max(len(prompt) + len(resp) for prompt, resp in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (prompt, response) in enumerate(rows):
        seq = torch.tensor(prompt + response)
        input_ids[r, : len(seq)] = seq
        attention_mask[r, : len(seq)] = 1
        # position t predicts token t + 1; only response tokens are targets
        labels[r, len(prompt) - 1: len(seq) - 1] = seq[len(prompt):]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def synthetic_pairs(n, vocab, seed=0):
    """Prompt: a few tokens; chosen: the prompt's tokens + 1 (mod vocab); rejected: + 2."""
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        prompt = torch.randint(3, vocab, (int(torch.randint(3, 7, (1,), generator=gen)),),
                               generator=gen).tolist()
        pairs.append({"prompt": prompt,
                      "chosen": [(t + 1) % vocab for t in prompt] + [1],
                      "rejected": [(t + 2) % vocab for t in prompt] + [1]})
    return pairs


def tiny_qwen2(vocab=64, seed=0):
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=False)
    return Qwen2ForCausalLM(config)


def main(max_steps=30, batch_per_process=8, output_dir=None, lr=3e-3):
    """Train for ``max_steps`` and return the logged training losses."""
    model = tiny_qwen2()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=output_dir or tmp, max_steps=max_steps,
            per_device_train_batch_size=batch_per_process, learning_rate=lr,
            lr_scheduler_type="constant", logging_steps=1, report_to=[],
            use_cpu=not torch.cuda.is_available(), remove_unused_columns=False,
            save_strategy="no", disable_tqdm=True)
        trainer = REDITrainer(model=model, args=args, train_dataset=synthetic_pairs(256, 64),
                              data_collator=collate_pairs)
        trainer.train()
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


if __name__ == "__main__":
    losses = main(*map(int, sys.argv[1:3]))
    if os.environ.get("RANK", "0") == "0":  # every process logs the same (averaged) loss
        for step, loss in enumerate(losses, 1):
            print(f"step {step:3d}  REDI loss {loss:.4f}")
