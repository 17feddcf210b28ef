"""What the demo measures beside accuracy, to see *how* a Stage-2 method changes the student
(issue 26: the negative term should push down the unreliable terse style, more SFT on the
positives should not):

* ``style_metrics``: of a set of samples (``redi eval``'s ``samples.jsonl``), the terse
  share (samples whose ``builtin_task.trace_style`` is "terse" / all samples) and the
  accuracy of each style (correct samples of that style / samples of that style; None when
  the model wrote none in that style).
* ``pair_logprobs_per_token``: the Stage-2 pairs scored by a final model, the mean over
  pairs of lp(y_w)/|y_w| and lp(y_l)/|y_l| (summed completion log-probs over completion
  tokens), by the package's fused pair log-prob op (``redi.pair_logprobs``) on the same
  tokenization as a Stage-2 run (``recipes/tiny_redi.yaml``'s length limits). Every method
  (Stage 1 and the SFT controls included) is scored the same way, after training, not
  read from its training log.
"""

from __future__ import annotations

import json
from pathlib import Path

from redi.data import builtin_task

STYLE_NAMES = (*builtin_task.STYLES, builtin_task.OTHER_STYLE)
SCORING_RECIPE = "tiny_redi.yaml"
SCORING_BATCH = 64


def style_metrics(samples_path: Path, k: int) -> dict:
    """``terse_share`` and ``accuracy_by_style`` of the first ``k`` samples per problem."""
    counts = dict.fromkeys(STYLE_NAMES, 0)
    correct = dict.fromkeys(STYLE_NAMES, 0)
    for line in samples_path.open():
        record = json.loads(line)
        if record["sample"] < k:
            style = builtin_task.trace_style(record["text"])
            counts[style] += 1
            correct[style] += bool(record["correct"])
    total = sum(counts.values())
    return {"terse_share": counts["terse"] / total if total else None,
            "accuracy_by_style": {s: correct[s] / counts[s] if counts[s] else None
                                  for s in STYLE_NAMES}}


def pair_logprobs_per_token(model_dir: Path, pairs_path: Path) -> dict:
    """``{"chosen": mean lp(y_w)/|y_w|, "rejected": mean lp(y_l)/|y_l|, "pairs": n}`` of the
    pairs in ``pairs_path`` under the model in ``model_dir`` (see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM

    import redi
    from redi.data.batching import collate_pairs
    from redi.data.formatting import IGNORE_INDEX
    from redi.data.tokenized import load_pairs
    from redi.data.tokenizer import load_tokenizer
    from redi.demo.design import RECIPES
    from redi.integrations.transformers import head_inputs, model_softcap
    from redi.train.config import build_config
    from redi.train.loader import make_formatter

    tokenizer = load_tokenizer(str(model_dir))
    pairs = load_pairs(pairs_path, make_formatter(build_config(RECIPES / SCORING_RECIPE),
                                                  tokenizer))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 local_files_only=True).eval()
    softcap = model_softcap(model.config)
    sums = {"chosen": 0.0, "rejected": 0.0}
    with torch.no_grad():
        for start in range(0, len(pairs), SCORING_BATCH):
            batch = collate_pairs(pairs.select(range(start, min(start + SCORING_BATCH,
                                                                len(pairs)))),
                                  tokenizer.pad_token_id)
            hidden, weight, bias = head_inputs(model, allow_softcap=True,
                                               input_ids=batch["input_ids"],
                                               attention_mask=batch["attention_mask"],
                                               position_ids=batch["position_ids"])
            chosen, rejected = redi.pair_logprobs(weight, hidden, batch["labels"], bias,
                                                  softcap=softcap)
            lengths = (batch["labels"] != IGNORE_INDEX).sum(1).double()
            half = len(chosen)
            sums["chosen"] += float((chosen.double() / lengths[:half]).sum())
            sums["rejected"] += float((rejected.double() / lengths[half:]).sum())
    return {"chosen": sums["chosen"] / len(pairs), "rejected": sums["rejected"] / len(pairs),
            "pairs": len(pairs)}
