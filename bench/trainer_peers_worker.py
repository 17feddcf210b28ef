"""One trainer configuration of the ``trainer-peers`` section, run in its own process.

    python bench/trainer_peers_worker.py SPEC.json RESULT.json

``SPEC.json`` (written by ``trainer_peers.py`` and ``real_scale.py``) names the trainer
(``redi train``, TRL's ``DPOTrainer`` or ``CPOTrainer``, or
``redi.integrations.trl.REDITrainer``), the model (a directory, or ``model_config``: a redi
``model_config`` mapping built with random weights; ``lora_r``: LoRA adapters on every linear
layer but the head), the pairs and the batch; the worker trains ``steps`` optimizer steps and
writes ``RESULT.json``: the wall time of every optimizer step, the time of the reference pass
(DPO with a cached/precomputed reference; null otherwise), the time from the worker's start to
the end of the first step and the attention implementation the model ran. ``redi train``
takes further ``overrides`` (key=value), and with ``probe`` the wall time and peak resident
set of each step, checkpoint and export and the trained model's logits on one batch
(``LoopProbe``). Trainer ``reload`` loads an export with ``AutoModelForCausalLM`` and compares
its logits with those. A failure is written as ``{"error": "<type>: <message>"}`` and the
process exits 0, so the caller records it as a row. Peak memory is measured by the caller
(the peak resident set of this process), or reported here when probes reset it.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

STARTED = time.perf_counter()  # the worker's start, for the time to the first step


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


def redi_train_argv(spec: dict) -> list[str]:
    """The ``redi train`` overrides of ``spec`` (its ``overrides`` last: they win)."""
    model = [f"init_from={spec['model_dir']}"] if spec.get("model_dir") else []
    argv = [f"loss={spec['loss']}", f"data={spec['data_dir']}", *model,
            f"output_dir={spec['out_dir']}", f"max_steps={spec['steps']}",
            f"global_batch_size={spec['global_batch']}", f"micro_batch_size={spec['micro_batch']}",
            f"max_length={spec['max_length']}", "lr=1e-6", f"beta={spec['beta']}",
            f"gamma={spec['gamma']}", "dtype=fp32", "progress=false", "log_every=1",
            "save_every=0", "warmup_ratio=0.1"]
    if spec["loss"] == "dpo":
        argv.append("reference=cached")
    return argv + list(spec.get("overrides", ()))


class _Stopped(Exception):
    """Raised by ``LoopProbe`` after ``stop_after`` steps: the run ends there."""


class LoopProbe:
    """Wall time and peak resident set of every training step, checkpoint and export of a
    ``redi train`` run in this process (``redi.train.loop``'s functions, wrapped), the
    attention implementation of the model it builds, and the trained model's logits on one
    batch of ``probe_tokens`` random ids, saved to ``logits_file`` (if given) just before the
    export.

    The resident-set high-water mark is reset before each wrapped call (``proc_status``), so
    each has its own peak, and read first: the peak of what ran since the last call (set-up,
    the reference pass, the gaps) is a ``gap`` event. The process's overall peak is the
    largest of all; the caller's ``ru_maxrss`` only sees the peak since the last reset.
    ``stop_after``: end the run after that many steps (no final checkpoint or export)."""

    def __init__(self, loop, spec: dict):
        self.events: list[dict] = []
        self.stop_after = spec.get("stop_after")
        self.logits_file = spec.get("logits_file")
        self.probe_tokens = spec.get("probe_tokens", 64)
        self.attn = None
        self._wrap(loop, "train_step", "step")
        self._wrap(loop, "checkpoint", "checkpoint")
        self._wrap(loop, "export_hf", "export",
                   before=self._save_logits if self.logits_file else None)
        build = loop.build_model

        def built(*args, **kwargs):
            model = build(*args, **kwargs)
            self.attn = self.attn or model.lm.config._attn_implementation
            return model

        loop.build_model = built

    def _wrap(self, owner, name: str, what: str, before=None):
        from proc_status import reset_rss_peak, status_bytes

        fn = getattr(owner, name)

        def probed(*args, **kwargs):
            if before is not None:
                before(*args)
            self.events.append({"what": "gap" if self.events else "set-up",
                                "peak_rss_bytes": status_bytes("VmHWM")})
            reset_rss_peak()
            start = time.perf_counter()
            value = fn(*args, **kwargs)
            end = time.perf_counter()
            self.events.append({"what": what, "seconds": end - start, "at_s": end - STARTED,
                                "peak_rss_bytes": status_bytes("VmHWM"),
                                "path": str(value) if isinstance(value, Path) else None})
            steps = sum(e["what"] == "step" for e in self.events)
            if what == "step" and steps == self.stop_after:
                raise _Stopped
            return value

        setattr(owner, name, probed)

    def _save_logits(self, model, *args):
        import torch
        from safetensors.torch import save_file

        vocab = model.lm.config.get_text_config().vocab_size
        ids = torch.randint(0, vocab, (1, self.probe_tokens),
                            generator=torch.Generator().manual_seed(0))
        captured = {}

        def logits_of(weight, hidden, labels, bias=None, **kwargs):
            captured["logits"] = torch.nn.functional.linear(hidden, weight, bias)
            return hidden.new_zeros(()), {}

        with torch.no_grad():
            model({"input_ids": ids, "labels": ids}, logits_of)
        save_file({"input_ids": ids, "logits": captured["logits"].contiguous()},
                  self.logits_file)

    def result(self) -> dict:
        from proc_status import status_bytes

        peaks = [e["peak_rss_bytes"] for e in self.events] + [status_bytes("VmHWM")]
        return {"events": self.events, "attn_implementation": self.attn,
                "peak_rss_bytes": max(peaks)}


def _redi_train(spec: dict) -> dict:
    from redi.train import loop
    from redi.train.cli import train_main
    from redi.train.reference import CachedReference

    reference = _Timed(CachedReference, "build")
    probe = LoopProbe(loop, spec) if spec.get("probe") else None
    try:
        status = train_main(redi_train_argv(spec))
    except _Stopped:
        status = 0
    if status != 0:
        raise RuntimeError(f"redi train exited with status {status}")
    records = [json.loads(line) for line in (Path(spec["out_dir"]) / "metrics.jsonl").open()]
    result = {"step_times_s": [r["tokens"] / r["tokens_per_s"] for r in records],
              "reference_s": reference.seconds,
              "losses": {r["step"]: r["loss"] for r in records}}
    if probe is not None:
        steps = [e for e in probe.events if e["what"] == "step"]
        result.update(probe.result(), step_times_s=[e["seconds"] for e in steps],
                      first_step_s=steps[0]["at_s"] if steps else None)
    return result


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
                max_length=spec["max_length"],
                gradient_checkpointing=spec.get("gradient_checkpointing", False))


def _causal_lm(spec: dict):
    """The model a TRL trainer trains: ``spec["model_dir"]``'s, or a random one of
    ``spec["model_config"]`` (seed 0), with ``lora_r`` LoRA adapters as ``redi train``
    puts them (``redi.train.lora.apply_lora``: every linear layer but the head)."""
    import types

    import torch
    from transformers import AutoModelForCausalLM

    if spec.get("model_config"):
        from redi.train.model_spec import scratch_config

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(scratch_config(spec["model_config"]),
                                                 dtype=torch.float32, attn_implementation="sdpa")
    else:
        model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32,
                                                     attn_implementation="sdpa")
    if spec.get("lora_r"):
        from redi.train.lora import apply_lora

        model = apply_lora(model, types.SimpleNamespace(
            lora_r=spec["lora_r"], lora_alpha=16.0, lora_dropout=0.0,
            lora_target_modules="all-linear"))
    return model


def _trl(spec: dict) -> dict:
    import datasets

    from redi.data.tokenizer import load_tokenizer

    rows = [json.loads(line) for line in Path(spec["rows"]).open()]
    dataset = datasets.Dataset.from_list(rows)
    tokenizer = load_tokenizer(spec.get("model_dir"))
    model = _causal_lm(spec)
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
            "reference_s": None if reference is None else reference.seconds,
            "first_step_s": ends[1] - STARTED if len(ends) > 1 else None,
            "attn_implementation": model.config._attn_implementation}


def _reload(spec: dict) -> dict:
    """``spec["model_dir"]`` (an export) loaded with ``AutoModelForCausalLM``: its logits on
    the ids of ``spec["logits_file"]`` against the logits saved there (``LoopProbe``)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    saved = load_file(spec["logits_file"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32,
                                                 attn_implementation="sdpa")
    with torch.no_grad():
        logits = model(input_ids=saved["input_ids"]).logits
    return {"logits_equal": torch.equal(logits, saved["logits"]),
            "logits_max_abs_diff": (logits - saved["logits"]).abs().max().item(),
            "logits_max_abs": saved["logits"].abs().max().item()}


def main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        import torch

        torch.set_num_threads(spec["threads"])
        torch.manual_seed(0)
        run = {"redi-train": _redi_train, "reload": _reload}.get(spec["trainer"], _trl)
        result = run(spec)
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
