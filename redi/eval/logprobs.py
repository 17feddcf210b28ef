"""Held-out log-probs of chosen vs rejected traces: how a model ranks the teacher's correct
and incorrect solutions it was not trained on (the quantity Stage 2 moves)."""

from __future__ import annotations

import torch

from redi.data.batching import collate_pairs
from redi.data.formatting import IGNORE_INDEX, Formatter
from redi.data.tokenized import load_pairs
from redi.data.tokenizer import load_tokenizer
from redi.integrations.transformers import model_softcap
from redi.pair_logprob_sums import pair_logprobs


@torch.no_grad()
def pair_logprob_margins(model_dir, pairs_path, max_length: int = 4096,
                         batch_size: int = 32) -> dict:
    """Mean length-normalized log-prob of the chosen and of the rejected completions of a
    pairs file (``redi prepare`` format) under a model directory, and their mean margin."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(model_dir)
    pairs = load_pairs(pairs_path, Formatter(tokenizer, max_length=max_length))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 local_files_only=True).eval()
    head = model.get_output_embeddings()
    softcap = model_softcap(model.config)
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        batch = collate_pairs([pairs[i] for i in range(start, min(start + batch_size,
                                                                 len(pairs)))],
                              tokenizer.pad_token_id)
        hidden = model.get_decoder()(input_ids=batch["input_ids"],
                                     attention_mask=batch["attention_mask"]).last_hidden_state
        lp_w, lp_l = pair_logprobs(head.weight, hidden, batch["labels"], head.bias,
                                softcap=softcap)
        lengths = (batch["labels"] != IGNORE_INDEX).sum(1)
        b = lp_w.shape[0]
        chosen.append(lp_w / lengths[:b])
        rejected.append(lp_l / lengths[b:])
    chosen, rejected = torch.cat(chosen), torch.cat(rejected)
    return {"pairs": len(pairs), "chosen_logps_avg": chosen.mean().item(),
            "rejected_logps_avg": rejected.mean().item(),
            "margin": (chosen - rejected).mean().item()}
