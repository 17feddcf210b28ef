"""The trainer: Stage 1 (SFT) and Stage 2 (REDI, DPO, SimPO) in one FSDP2 loop.

Read top to bottom: set up (process group, tokenizer, data, model, loss, optimizer,
schedule, reference, resume), then one optimizer step per iteration:

1. take this process's micro-batches for the step and agree, over all processes, on the
   loss normalizer (completion tokens for SFT, pairs for Stage 2), so that one process
   with N micro-batches and N processes with one each compute the same update;
2. forward + fused loss + backward per micro-batch (gradients accumulate);
3. clip, stop on a non-finite loss or gradient (the last good checkpoint stays), step,
   stop if the step made a parameter non-finite;
4. log, checkpoint every ``save_every`` steps or when SIGTERM/SIGINT asked to stop.

At the end: a last checkpoint and a Hugging Face export in ``output_dir/final``.

The functions below are these parts, in this order: ``set_up``, ``resume``, ``train_step``
(items 1-4 but the checkpoint), ``checkpoint``, ``finish_run``; ``_train``, at the bottom,
runs them.

A run starts only in an output directory that is its own, new or empty (unless
``overwrite=true``), and resumes from its own checkpoints only (``redi.train.run_dir``).
"""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from redi import losses, resolved_backend
from redi.files import OutputError, atomic_write_text
from redi.run_lock import RunLock
from redi.train import lora
from redi.train.checkpoint import (
    CheckpointError,
    check_not_linked,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)
from redi.train.config import ConfigError, TrainConfig, fit_micro_batch, to_yaml
from redi.train.distributed import Distributed, all_true, finish, init_distributed, shutdown
from redi.train.loader import TrainData
from redi.train.model_spec import model_source
from redi.train.modeling import build_model, compute_dtype, export_hf
from redi.train.reference import CachedReference, OnlineReference
from redi.train.run_config import changed_training_keys
from redi.train.run_dir import RunClaim, claim_output_dir
from redi.train.run_log import RunLog
from redi.train.step_metrics import StepMetrics, step_with_update_norm


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient norm; the run stops before the optimizer step."""


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps."""

    def __init__(self):
        self.requested = False
        self._previous = {s: signal.signal(s, self._handle)
                          for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def make_loss(config: TrainConfig) -> torch.nn.Module:
    if config.loss == "sft":
        return losses.FusedLinearSFTLoss(backend=config.loss_backend)
    common = dict(backend=config.loss_backend, single_pass=config.loss_single_pass)
    beta = {} if config.beta is None else {"beta": config.beta}
    if config.loss == "redi":
        return losses.FusedLinearREDILoss(alpha=config.alpha, chosen_coef=config.chosen_coef,
                                          neg_reweight_gamma=config.neg_reweight_gamma,
                                          negative_floor=config.negative_floor,
                                          **common)
    if config.loss == "dpo":
        return losses.FusedLinearDPOLoss(**common, **beta)
    return losses.FusedLinearSimPOLoss(gamma=config.gamma, **common, **beta)


def linear_warmup_decay(total_steps: int, warmup_ratio: float):
    """lr factor: (step + 1) / (warmup + 1) over the warmup steps (reaching 1 after them),
    then linearly to 0 at ``total_steps``."""
    warmup = int(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def make_reference(config, data: TrainData, env: Distributed, model, total_steps: int):
    """DPO's reference log-probs from the frozen Stage-1 model (None for other losses);
    under LoRA that is ``model`` with its adapters disabled. The cached table covers the
    pairs of the run's ``total_steps`` steps."""
    if config.loss != "dpo":
        return None
    needed = data.items_used(total_steps) if config.reference == "cached" else None
    if config.reference == "cached":
        cached = CachedReference.load(config.output_dir, data.fingerprint, needed,
                                      data.num_examples)
        if cached is not None:  # no reference model needed
            return cached
    if lora.is_lora(model):
        ref_model = lora.AdaptersDisabled(model)
    else:
        ref_model = build_model(config, env.device, trainable=False)
    online = OnlineReference(ref_model, config.loss_backend)
    if config.reference == "online":
        return online
    return CachedReference.build(config.output_dir, data.fingerprint, data.num_examples,
                                 online, data.reference_batches(needed), needed, env.device,
                                 env.is_main, config.progress)


def base_model(config, data: TrainData, model) -> str | None:
    """The starting model's identity where a resume builds on it again (None elsewhere):
    LoRA's frozen base under the saved adapters, DPO's reference. A checkpoint records it,
    and a resume over another model at the same path is refused."""
    if lora.is_lora(model) or config.loss == "dpo":
        return data.model_identity
    return None


def check_base_model(config, checkpoint: Path, base: str | None) -> None:
    """CheckpointError if ``checkpoint`` recorded another starting model than ``base`` (a
    checkpoint without the record, or an unreadable one, is left to ``load_checkpoint``)."""
    try:
        recorded = json.loads((checkpoint / "trainer.json").read_text()).get("base_model")
    except (OSError, ValueError, AttributeError):
        return
    if None not in (base, recorded) and recorded != base:
        raise CheckpointError(
            f"{model_source(config) or 'model_config'} is not the model {checkpoint} was "
            "trained from (its files changed since): restore it, or use another output_dir "
            "or resume=never")


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 2**20


def train(config: TrainConfig) -> Path:
    """Run (or resume) training; return the export directory (or the checkpoint written
    when a signal stopped the run). The output directory is locked for the run."""
    env = init_distributed()
    lock = RunLock(config.output_dir)
    try:
        error = None
        if env.is_main:
            try:
                lock.acquire()
            except OutputError as err:  # in use by another run, or a file
                error = err
        if not all_true(error is None, env.device):
            raise error or OutputError(f"{config.output_dir}: the main process could not "
                                       "take it (see its message)")
        result = _train(config, env)
        finish()
        return result
    finally:
        lock.release()
        shutdown()


def start_run_config(config: TrainConfig, out: Path, claim: RunClaim, resume_from: Path | None,
                     is_main: bool):
    """Write ``config.yaml`` (with the run's id) for a run that starts from step 0 or from
    another run's checkpoint; when the directory's run resumes, keep it, and refuse changed
    training keys."""
    path = out / "config.yaml"
    if claim.continues and resume_from is not None:
        changed = changed_training_keys(path.read_text(), config)
        if changed:
            raise ConfigError(f"cannot resume {out} with changed training settings "
                              f"({'; '.join(changed)}): set them back, or start a new run: "
                              "another output_dir, or resume=never overwrite=true")
        return
    if is_main:
        atomic_write_text(path, to_yaml(config, claim.run_id))


def parameters_finite(model: torch.nn.Module) -> bool:
    """Whether every parameter is finite (one fused pass; sharded parameters are reduced)."""
    norm = torch.nn.utils.get_total_norm([p.detach() for p in model.parameters()])
    return math.isfinite(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))


@dataclass
class Run:
    """What a run holds between its steps: built by ``set_up``, advanced by ``resume`` and
    ``train_step``, saved by ``checkpoint``, ended by ``finish_run``."""

    config: TrainConfig
    env: Distributed
    out: Path
    claim: RunClaim
    data: TrainData
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    trained: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    total_steps: int
    reference: CachedReference | OnlineReference | None
    base_model: str | None  # the starting model's identity, where a resume builds on it
    step: int = 0
    tokens_seen: int = 0
    saved_step: int | None = None  # the step of the last checkpoint this process wrote/read
    log: Any = None  # the RunLog, opened by _train once the start step is known

    def loss_backend(self) -> str:
        """What loss_backend runs now: auto may fall back from Triton."""
        return resolved_backend(self.config.loss_backend, self.env.device,
                                compute_dtype(self.config, self.env.device))


def set_up(config: TrainConfig, env: Distributed) -> tuple[Run, Path | None]:
    """The run at step 0 (seeds, claimed output directory, config.yaml, data, model, loss,
    optimizer, schedule, reference) and the checkpoint it resumes from (None: none)."""
    config, lowered = fit_micro_batch(config, env.world_size)
    if lowered and env.is_main:
        print(f"redi: {lowered}", file=sys.stderr)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    out = Path(config.output_dir)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
    check_not_linked(out)
    claim = claim_output_dir(config, out)
    resume_from = resolve_resume(config.resume, out, claim.run_id)
    start_run_config(config, out, claim, resume_from, env.is_main)

    data = TrainData(config, env)
    model = build_model(config, env.device)
    loss_fn = make_loss(config)
    trained = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters
    optimizer = torch.optim.AdamW(trained, lr=config.lr,
                                  betas=(config.adam_beta1, config.adam_beta2),
                                  eps=config.adam_eps, weight_decay=config.weight_decay)
    total_steps = config.max_steps or math.ceil(config.epochs * data.steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(total_steps, config.warmup_ratio))
    base = base_model(config, data, model)
    if resume_from is not None:
        check_base_model(config, resume_from, base)  # before a reference is built on it
    reference = make_reference(config, data, env, model, total_steps)
    run = Run(config, env, out, claim, data, model, loss_fn, trained, optimizer, scheduler,
              total_steps, reference, base)
    return run, resume_from


def resume(run: Run, resume_from: Path) -> None:
    """Load a checkpoint into the run: weights, optimizer, schedule, sampler, step."""
    meta, sampler_state = load_checkpoint(resume_from, run.model, run.optimizer, run.scheduler)
    if meta.get("loss") != run.config.loss:
        raise CheckpointError(f"{resume_from} was written by a {meta.get('loss')} run, "
                              f"not {run.config.loss}: use another output_dir or resume=never")
    try:
        run.data.load_state_dict(sampler_state)
    except ValueError as err:  # the data, seed or process count changed since
        raise CheckpointError(f"cannot resume from {resume_from}: {err}") from err
    run.step, run.tokens_seen = meta["step"], meta["tokens_seen"]
    run.saved_step = run.step


def train_step(run: Run) -> None:
    """One optimizer step (items 1-4 of the module docstring, but the checkpoint)."""
    config, env, model = run.config, run.env, run.model
    started = time.perf_counter()
    micro_batches = run.data.next_step()
    normalizer = run.data.loss_normalizer(micro_batches)
    metrics = StepMetrics(env.device, config.loss)
    for batch in micro_batches:
        loss_kwargs = run.data.loss_kwargs(batch, normalizer)
        if run.reference is not None:
            ref_chosen, ref_rejected = run.reference(batch)
            loss_kwargs.update(ref_chosen_logps=ref_chosen,
                               ref_rejected_logps=ref_rejected)
        loss, batch_metrics = model(batch, run.loss_fn, **loss_kwargs)
        loss.backward()
        metrics.add(loss, batch_metrics, batch)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.trained, config.grad_clip)
    grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor")
                      else grad_norm)
    reduced = metrics.reduce(env.world_size)
    if not (math.isfinite(reduced["loss"]) and math.isfinite(grad_norm)):
        kept = list_checkpoints(run.out, run.claim.run_id)
        raise TrainingDiverged(
            f"step {run.step + 1}: loss {reduced['loss']}, grad norm {grad_norm}; "
            f"stopped before the optimizer step. Last good checkpoint: "
            f"{kept[-1] if kept else 'none'}")
    logged = (run.step + 1) % config.log_every == 0 or run.step + 1 == run.total_steps
    if logged:
        moved = step_with_update_norm(run.optimizer, model)
    else:
        run.optimizer.step()
    if not parameters_finite(model):
        kept = list_checkpoints(run.out, run.claim.run_id)
        raise TrainingDiverged(
            f"step {run.step + 1}: the optimizer step made parameters non-finite (lr "
            f"{run.scheduler.get_last_lr()[0]}, grad norm {grad_norm}). Last good "
            f"checkpoint: {kept[-1] if kept else 'none'}")
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    run.tokens_seen += int(reduced["tokens"])
    elapsed = time.perf_counter() - started
    if logged:
        run.log.step(run.step, {**reduced, "lr": run.scheduler.get_last_lr()[0],
                                "update_norm": moved,
                                "grad_norm": grad_norm, "tokens_per_s": reduced["tokens"] /
                                elapsed, "tokens_seen": run.tokens_seen,
                                "peak_mem_gb": peak_memory_gb(env.device),
                                "loss_backend": run.loss_backend()})


def checkpoint(run: Run) -> Path:
    """Save the run at its current step (keeping the last ``keep_last``)."""
    state = {"scheduler": run.scheduler.state_dict(), "tokens_seen": run.tokens_seen,
             "loss": run.config.loss, "base_model": run.base_model}
    run.saved_step = run.step
    return save_checkpoint(run.out, run.step, run.model, run.optimizer, state,
                           run.data.state_dict(), run.config.keep_last, run_id=run.claim.run_id)


def finish_run(run: Run) -> Path:
    """A last checkpoint (unless this step has one) and the Hugging Face export."""
    if run.saved_step != run.step:
        checkpoint(run)
    final = run.out / "final"
    export_hf(run.model, run.data.tokenizer, final, run.env.is_main, run.config.export_adapter,
              overwrite=run.config.overwrite, training_prompt=run.data.training_prompt)
    run.log.message(f"done: {run.step} steps, export in {final}")
    return final


def _train(config: TrainConfig, env: Distributed) -> Path:
    run, resume_from = set_up(config, env)
    if resume_from is not None:
        resume(run, resume_from)
    config = run.config
    run.log = RunLog(run.out, run.total_steps, run.step, env.is_main, config.progress,
                     config.tensorboard, description=f"{config.loss} ({env.world_size} proc)")
    if resume_from is not None:
        run.log.message(f"resumed from {resume_from} at step {run.step}")
    run.log.message(f"loss backend: {run.loss_backend()} (loss_backend={config.loss_backend})")
    stop = StopRequest()
    try:
        while run.step < run.total_steps:
            train_step(run)
            if not all_true(not stop.requested, env.device):
                path = checkpoint(run)
                run.log.message(f"stopped by signal at step {run.step}; checkpoint {path}; "
                                "rerun with resume=auto to continue")
                return path
            if config.save_every and run.step % config.save_every == 0 \
                    and run.step < run.total_steps:
                checkpoint(run)
        return finish_run(run)
    finally:
        stop.restore()
        run.log.close()
