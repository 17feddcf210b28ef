"""The trainer for both stages (needs the ``train`` extra): ``redi sft`` / ``redi train``.

* ``config``: every key (recipe YAML or ``key=value``) with its default and check;
* ``loop``: the training loop (one process or many under torchrun, FSDP2);
* ``loader``: tokenized data, batches and the length-grouped sampler for one run;
* ``modeling``: the model (local HF directory or ``model_config``), sharding, export;
* ``model_spec``: the model's HF config (``model_config`` / ``model_overrides``) and the
  checks before training (keys, vocabulary, positions);
* ``step_metrics``: the per-step metrics (log-probs, lengths, weights, update norm);
* ``reference``: DPO's frozen reference (online or cached);
* ``checkpoint``: atomic distributed checkpoints and exact resume;
* ``run_log``: progress bar, ``metrics.jsonl``, TensorBoard;
* ``distributed``: process-group set-up and teardown;
* ``cli`` / ``export``: the ``redi sft|train|export`` commands.
"""
