"""One trainer configuration of the ``trainer-peers`` section, run in its own process.

    python bench/trainer_peers_worker.py SPEC.json RESULT.json

``SPEC.json`` (written by ``trainer_peers.py``) names the trainer (``redi train``, TRL's
``DPOTrainer`` or ``CPOTrainer``, or ``redi.integrations.trl.REDITrainer``), the model
directory, the pairs and the batch; the worker trains ``steps`` optimizer steps and writes
``RESULT.json``: the wall time of every optimizer step and the time of the reference pass
(DPO with a cached/precomputed reference; null otherwise). A failure is written as
``{"error": "<type>: <message>"}`` and the process exits 0, so the caller records it as a row.
Peak memory is measured by the caller (the peak resident set of this process).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path


class _Timed:
    """Wrap ``owner.name`` (a function or classmethod) so its total wall time is recorded."""

    def __init__(self, owner, name: str):
        self.seconds = None
        raw = owner.__dict__[name]
        is_classmethod = isinstance(raw, classmethod)
        fn = raw.__func__ if is_classmethod else raw

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds = (self.seconds or 0.0) + time.perf_counter() - start

        setattr(owner, name, classmethod(timed) if is_classmethod else timed)


def _redi_train(spec: dict) -> dict:
    from redi.train.cli import train_main
    from redi.train.reference import CachedReference

    reference = _Timed(CachedReference, "build")
    out = Path(spec["out_dir"])
    argv = [f"loss={spec['loss']}", f"data={spec['data_dir']}", f"init_from={spec['model_dir']}",
            f"output_dir={out}", f"max_steps={spec['steps']}",
            f"global_batch_size={spec['global_batch']}", f"micro_batch_size={spec['micro_batch']}",
            f"max_length={spec['max_length']}", "lr=1e-6", f"beta={spec['beta']}",
            f"gamma={spec['gamma']}", "dtype=fp32", "progress=false", "log_every=1",
            "save_every=0", "warmup_ratio=0.1"]
    if spec["loss"] == "dpo":
        argv.append("reference=cached")
    status = train_main(argv)
    if status != 0:
        raise RuntimeError(f"redi train exited with status {status}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    return {"step_times_s": [r["tokens"] / r["tokens_per_s"] for r in records],
            "reference_s": reference.seconds}


def _step_clock():
    """A TrainerCallback recording the time at which training begins and each optimizer
    step ends."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        ends: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.ends = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    return StepClock()


def _hf_args(spec: dict) -> dict:
    return dict(output_dir=spec["out_dir"], per_device_train_batch_size=spec["micro_batch"],
                gradient_accumulation_steps=spec["global_batch"] // spec["micro_batch"],
                max_steps=spec["steps"], learning_rate=1e-6, warmup_steps=0.1,
                lr_scheduler_type="linear", weight_decay=1e-4, max_grad_norm=1.0,
                logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                bf16=False, disable_tqdm=True, dataloader_num_workers=0, seed=42,
                max_length=spec["max_length"])


def _trl(spec: dict) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM

    from redi.data.tokenizer import load_tokenizer

    rows = [json.loads(line) for line in Path(spec["rows"]).open()]
    dataset = datasets.Dataset.from_list(rows)
    tokenizer = load_tokenizer(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32,
                                                 attn_implementation="sdpa")
    clock, reference = _step_clock(), None
    if spec["trainer"] == "trl-dpo":
        from trl import DPOConfig, DPOTrainer

        reference = _Timed(DPOTrainer, "_precompute_ref_logps")
        args = DPOConfig(**_hf_args(spec), beta=spec["beta"], loss_type=["sigmoid"],
                         precompute_ref_log_probs=True, use_liger_kernel=spec["liger"])
        trainer = DPOTrainer(model=model, args=args, train_dataset=dataset,
                             processing_class=tokenizer, callbacks=[clock])
    elif spec["trainer"] == "trl-cpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        args = CPOConfig(**_hf_args(spec), loss_type="simpo", cpo_alpha=0.0,
                         beta=spec["beta"], simpo_gamma=spec["gamma"])
        trainer = CPOTrainer(model=model, args=args, train_dataset=dataset,
                             processing_class=tokenizer, callbacks=[clock])
    else:  # redi-trl
        from redi.integrations.trl import REDIConfig, REDITrainer

        args = REDIConfig(**_hf_args(spec), alpha=0.8)
        trainer = REDITrainer(model, args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    ends = clock.ends
    return {"step_times_s": [b - a for a, b in zip(ends, ends[1:])],
            "reference_s": None if reference is None else reference.seconds}


def main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        import torch

        torch.set_num_threads(spec["threads"])
        torch.manual_seed(0)
        result = _redi_train(spec) if spec["trainer"] == "redi-train" else _trl(spec)
    except Exception as err:  # noqa: BLE001 -- every failure becomes a row, never a crash
        traceback.print_exc()
        message = " ".join(str(err).split())[:300]
        result = {"error": f"{type(err).__name__}: {message}"}
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    status = main(*sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # redi train's process group is gone; skip interpreter teardown
