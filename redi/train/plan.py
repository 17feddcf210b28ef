"""``redi plan``: the peak memory per device of a ``redi sft`` / ``redi train`` run, predicted
from the config alone (the model is built on the meta device: no weights are read).

    redi plan --config recipes/tiny_redi.yaml [key=value ...] [--gpu-memory 80GiB] [--nproc N]

What one device holds, with P parameters (P_t trainable: all, or with ``lora_r`` the LoRA
adapters, counted on the meta-device model as ``redi.train.lora`` wraps it; they add to P),
W = ``--nproc`` processes, b bytes per element of the compute dtype (bf16 on GPU, fp32 on
CPU), n tokens per micro-batch
(``micro_batch_size`` x ``max_length``, twice that for Stage-2 pairs), H, I, L, V the hidden,
MLP, layer and vocabulary sizes (how ``redi.train.modeling`` shards and runs the model):

* weights: fp32 master weights, FSDP2-sharded: 4 P / W;
* gradients: fp32, sharded: 4 P_t / W; optimizer: AdamW's two fp32 moments: 8 P_t / W
  (these three live in host memory with ``cpu_offload``);
* gathered weights: FSDP2 all-gathers a unit before using it: the root (embeddings, head,
  final norm) and two decoder layers (the current one and the prefetched next), b bytes each;
* activations (autograd's saved tensors of a Qwen2/Llama decoder layer, per token): the two
  RMSNorm inputs and outputs (4H), q, k, v after RoPE and the GQA repeat and the attention
  output (4H), the o_proj input (H), gate, up, SiLU(gate) and the down_proj input (4I):
  (9H + 4I) b per token and layer; under LoRA the frozen norms and projections save 3H
  less and each adapter its A output, r: (6H + 4I + R) b with R the ranks of a layer's
  adapters summed (measured with autograd's hooks, tests/train/test_plan.py); with
  checkpointing only the layer input (H b) stays saved and one layer is recomputed in the
  backward; plus the final norm's input and output
  (2 H b per token), one layer's working memory in flight (2 (H + I) b per token)
  and, for padded batches without flash-attn, the boolean [rows, T, T] attention mask
  (packed rows have none: flash-attn, or one sequence at a time);
* fused loss (``kernels/``): the fp32 dx buffer (4 n H), the fp32 dW accumulator (4 V H;
  three such [V, H] buffers with ``loss_single_pass``; none when the head is frozen, as under
  LoRA), fp32 copies of 16-bit inputs, and one block of logits (at most 64 MiB on the CPU
  path, 512 MiB with the Triton kernels);
* DPO reference: ``online`` keeps a second sharded fp32 copy (4 P / W) for the whole run;
  ``cached`` loads it only for the scoring pass before training (its own phase below);
* runtime: what the process holds besides tensors (CPU: Python, torch, transformers and the
  gloo group, the measured peak resident set of a tiny model's run, ``CPU_RUNTIME_BYTES``;
  GPU: the CUDA context and NCCL, estimated);
* a logged step's optimizer step (after the backward, without activations): weights,
  gradients, moments, the one parameter tensor ``update_norm`` saves at a time and AdamW's
  temporaries (all second moments' square roots at once on CUDA, one tensor's on CPU).

The peak is the largest of the three phases (the reference pass, the forward and backward,
the optimizer step). In a
training step the gradients coexist with the activations when a step has several micro-
batches (they accumulate); with one micro-batch per step the activations are gone when the
last gradients arrive, so the step's peak is the larger of the two.

Checked on CPU (``bench/plan_validation.py``; the figures:
``bench/results/cpu-2026-12-03/plan-validation.md``) against the peak RSS of ``redi train``
at four sizes of a small Qwen2 (a 30k-parameter one that measures the runtime, then
activation-, balanced- and weight-dominated), with ``MALLOC_MMAP_THRESHOLD_=65536`` (freed
blocks leave the resident set) and with glibc's default allocator, which keeps freed heap
blocks resident and so measures more than the plan; the activation term matches autograd's
saved tensors (tests/train/test_plan.py). At two real shapes with random weights
(``bench/real_scale.py``, ``bench/results/cpu-2026-12-04/real-scale-README.md``):
Qwen2.5-0.5B full fine-tuning, one pair of 2 x 2,048 tokens: planned 17.66 GiB, measured
17.20 (1.027x); Qwen2.5-Math-1.5B LoRA r=16, 2 x 1,024 tokens: measured 17.51 GiB, planned
19.56 before the LoRA terms above (frozen head, 6H + 4I + R) and 17.73 (1.013x, computed, not
re-run) after; with activation checkpointing, Qwen2.5-0.5B full, 2 x 8,192 tokens: planned
11.34 GiB, measured 10.83 (1.047x), and Qwen2.5-Math-1.5B LoRA r=16, 2 x 4,096: planned 11.39,
measured 10.88 (1.047x). Read a CPU plan as a slight lower bound at small sizes, 1-5 % high at
these.
Untested (no GPU here): the bf16 activation sizes (RMSNorm's fp32 upcasts), the Triton block
size, FSDP2's all-gather and reduce-scatter buffers under NCCL, AdamW's multi-tensor
temporaries, the CUDA context and allocator fragmentation, CPU offload, more than one process.
"""

from __future__ import annotations

import dataclasses
import re

from redi.train.config import TrainConfig

GiB, MiB = 2**30, 2**20
# peak resident set of `redi train` on a 30k-parameter model (bench/plan_validation.py's first
# case, bench/results/cpu-2026-12-03/plan-validation.md): Python, torch, transformers, datasets,
# the gloo group, autograd's and oneDNN's buffers
CPU_RUNTIME_BYTES = int(0.65 * GiB)
GPU_RUNTIME_BYTES = 1 * GiB  # CUDA context + NCCL buffers (estimate; not measured here)
LOSS_BLOCK_BYTES = {"cpu": 64 * MiB, "cuda": 512 * MiB}  # kernels/{torch,triton}_impl.py
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
          "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


class PlanError(ValueError):
    """Input ``redi plan`` cannot use (one line)."""


def parse_size(text: str, what: str = "--gpu-memory") -> int:
    """``80GiB``, ``80GB``, ``512MiB``, ``1.5T``, ``1000000`` (bytes) -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise PlanError(f"{what}: cannot read {text!r} as a memory size; use e.g. 80GiB, "
                        "40GB or 512MiB")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """Sizes read from the model's config and its meta-device instance."""
    params: int
    root_params: int  # embeddings, head, final norm: FSDP2's root unit
    layer_params: int  # one decoder layer
    hidden: int
    intermediate: int
    layers: int
    vocab: int
    largest_param: int  # elements of the largest parameter tensor (the embedding)
    description: str | None = None  # the shipped description counted, if no weights at hand
    adapter_params: int = 0  # LoRA (lora_r set): the adapters, the only trained parameters
    largest_adapter: int = 0  # elements of the largest adapter tensor
    layer_adapter_ranks: int = 0  # the ranks of one decoder layer's adapters, summed


def model_facts(config: TrainConfig) -> ModelFacts:
    """Build the configured causal LM on the meta device (no weights read) and count. The
    config is the model directory's, else ``model_config``'s, else (no model directory on
    this machine) the shipped description ``model_description`` names."""
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM

    from redi.train.model_spec import described_config, hf_config, model_source

    source = model_source(config)
    description = None
    if (source is None and config.model_config) or (
            source is not None and Path(source, "config.json").is_file()):
        hf = hf_config(config)
    elif config.model_description is not None:
        hf, description = described_config(config), config.model_description
    else:
        raise PlanError(f"{source} is not a Hugging Face model directory (no config.json); "
                        "point init_from or model at one (e.g. the base model of a "
                        "Stage-1 run not made yet), name its shipped description with "
                        "model_description=... or give model_config.*=...")
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(hf)
    layers = lm.get_decoder().layers
    params = sum(p.numel() for p in lm.parameters())
    layer_params = max(sum(p.numel() for p in layer.parameters()) for layer in layers)
    largest_param = max(p.numel() for p in lm.parameters())
    adapters, ranks = [0], 0
    if config.lora_r is not None:
        from redi.train.lora import apply_lora

        try:
            with torch.device("meta"):
                peft = apply_lora(lm, config)
        except ValueError as err:  # e.g. a target module the model does not have
            raise PlanError(str(err)) from None
        adapters = [p.numel() for p in peft.parameters() if p.requires_grad]
        ranks = sum(p.shape[0] for name, p in layers[0].named_parameters() if "lora_A" in name)
    text = hf.get_text_config()
    return ModelFacts(params=params, root_params=params - layer_params * len(layers),
                      layer_params=layer_params, hidden=text.hidden_size,
                      intermediate=text.intermediate_size, layers=len(layers),
                      vocab=text.vocab_size, largest_param=largest_param,
                      description=description, adapter_params=sum(adapters),
                      largest_adapter=max(adapters), layer_adapter_ranks=ranks)


@dataclasses.dataclass(frozen=True)
class Plan:
    parts: dict[str, int]  # device bytes of the training step, by component
    host_parts: dict[str, int]  # what cpu_offload moves to host memory
    reference_phase: int | None  # device peak of the cached reference's scoring pass
    optimizer_phase: int  # device peak of the optimizer step of a logged step
    peak: int


def _layer_saved_elements(f: ModelFacts) -> int:
    """Per token: what one decoder layer's forward saves for the backward, 9H + 4I, or
    under LoRA 6H + 4I + R (frozen weights need fewer inputs; R the adapters' ranks)."""
    if f.layer_adapter_ranks:
        return 6 * f.hidden + 4 * f.intermediate + f.layer_adapter_ranks
    return 9 * f.hidden + 4 * f.intermediate


def saved_activation_bytes(f: ModelFacts, tokens: int, width: int, checkpointing: bool) -> int:
    """Autograd's saved tensors of the decoder's forward: a layer's (``_layer_saved_elements``)
    per token and layer (one H, the layer input, with checkpointing) plus the final norm's
    input and output (2H)."""
    per_token_layer = f.hidden if checkpointing else _layer_saved_elements(f)
    return tokens * (f.layers * per_token_layer + 2 * f.hidden) * width


def _activation_bytes(f: ModelFacts, config: TrainConfig, tokens: int, rows: int,
                      width: int, device: str) -> int:
    saved = saved_activation_bytes(f, tokens, width, config.activation_checkpointing)
    if config.activation_checkpointing:  # one layer recomputed in the backward
        saved += tokens * _layer_saved_elements(f) * width
    in_flight = tokens * 2 * (f.hidden + f.intermediate) * width
    flash = device == "cuda" and config.attn_implementation in ("auto", "flash_attention_2")
    packed = flash or config.packing is True  # no mask (redi.train.packed_attention)
    mask = 0 if packed else rows * (tokens // rows) ** 2
    return saved + in_flight + mask


def _loss_bytes(f: ModelFacts, config: TrainConfig, tokens: int, width: int,
                device: str, head_trained: bool) -> int:
    vh = f.vocab * f.hidden
    single = config.loss_single_pass and config.loss != "sft"
    buffers = 4 * tokens * f.hidden + (4 * vh * (3 if single else 1) if head_trained else 0)
    if width < 4:  # fp32 copies of the 16-bit hidden states and head weight
        buffers += 4 * tokens * f.hidden + 4 * vh
    return buffers + min(LOSS_BLOCK_BYTES[device], 4 * tokens * f.vocab)


def plan(config: TrainConfig, facts: ModelFacts, nproc: int = 1, device: str = "cuda",
         trainable_params: int | None = None) -> Plan:
    """The per-device breakdown of ``config`` on ``nproc`` processes of ``device``.
    ``trainable_params``: fewer than all (LoRA adapters); default: the adapters of a LoRA run
    (``facts.adapter_params``), else all."""
    width = 4 if (config.dtype == "fp32" or (config.dtype == "auto" and device == "cpu")) else 2
    trainable = trainable_params or facts.adapter_params or facts.params
    rows = config.micro_batch_size * (1 if config.loss == "sft" else 2)
    tokens = rows * config.max_length
    sharded = {"weights": 4 * (facts.params + facts.adapter_params) // nproc,
               "gradients": 4 * trainable // nproc,
               "optimizer (AdamW)": 8 * trainable // nproc}
    host = dict(sharded) if config.cpu_offload else {}
    device_static = {} if config.cpu_offload else dict(sharded)
    gathered = width * (facts.root_params + 2 * facts.layer_params)
    activations = _activation_bytes(facts, config, tokens, rows, width, device)
    loss = _loss_bytes(facts, config, tokens, width, device,
                       head_trained=trainable == facts.params)
    online_ref = 4 * facts.params // nproc if (config.loss == "dpo"
                                               and config.reference == "online") else 0
    runtime = CPU_RUNTIME_BYTES if device == "cpu" else GPU_RUNTIME_BYTES
    parts = {"runtime": runtime, **device_static, "gathered weights (FSDP2)": gathered,
             "activations": activations, "fused loss": loss}
    if online_ref:
        parts["reference (online)"] = online_ref
    accumulating = config.global_batch_size > config.micro_batch_size * nproc
    grads = parts.get("gradients", 0)
    step_peak = sum(parts.values())
    if not accumulating:  # gradients arrive as the activations are freed
        step_peak -= min(grads, activations)
    reference_phase = None
    if config.loss == "dpo" and config.reference == "cached":
        # before training: policy and reference weights, no gradients or optimizer state
        reference_phase = (runtime + 2 * parts.get("weights", 0) + gathered
                           + tokens * (3 * facts.hidden + 2 * (facts.hidden + facts.intermediate))
                           * width + LOSS_BLOCK_BYTES[device] + 4 * tokens * facts.hidden)
    optimizer_phase = _optimizer_phase_bytes(facts, config, trainable, nproc, device, runtime,
                                             device_static)
    peak = max(step_peak, reference_phase or 0, optimizer_phase)
    return Plan(parts=parts, host_parts=host, reference_phase=reference_phase,
                optimizer_phase=optimizer_phase, peak=peak)


def _optimizer_phase_bytes(f: ModelFacts, config: TrainConfig, trainable: int, nproc: int,
                           device: str, runtime: int, device_static: dict[str, int]) -> int:
    """A logged step's optimizer step: weights, gradients and moments, the copy of the one
    parameter ``update_norm`` compares against (``step_with_update_norm`` steps them one at a
    time; the largest trained one: 4 x its elements / W), and AdamW's temporaries: on CUDA the
    multi-tensor path of the unlogged steps takes sqrt of every second moment at once
    (4 P_t / W; counted with the copy, an upper bound), on CPU the per-tensor path two
    temporaries of the largest trained parameter (8 x its elements / W). With ``cpu_offload``
    all of it is host memory."""
    if config.cpu_offload:
        return runtime
    largest = f.largest_adapter or f.largest_param
    saved = 4 * largest // nproc
    temporaries = 4 * trainable // nproc if device == "cuda" else 8 * largest // nproc
    return runtime + sum(device_static.values()) + saved + temporaries


def lora_trainable_params(facts: ModelFacts, rank: int = 16) -> int:
    """Adapter parameters of rank ``rank`` on every attention and MLP projection of a
    Qwen2/Llama layer: r (in + out) per projection."""
    h, i, kv = facts.hidden, facts.intermediate, facts.hidden  # upper bound for k/v outputs
    per_layer = rank * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 3)
    return per_layer * facts.layers


def suggestions(config: TrainConfig, facts: ModelFacts, nproc: int, device: str,
                budget: int) -> list[tuple[str, int]]:
    """Changes that each lower the peak, cumulative, in the order tried, with the predicted
    peak after each; stops at the first that fits."""
    steps: list[tuple[str, dict, int | None]] = []
    if not config.activation_checkpointing:
        steps.append(("activation_checkpointing=true", {"activation_checkpointing": True}, None))
    micro = config.micro_batch_size
    while micro > 1:
        micro //= 2
        steps.append((f"micro_batch_size={micro}", {"micro_batch_size": micro}, None))
    if config.loss_single_pass:
        steps.append(("loss_single_pass=false", {"loss_single_pass": False}, None))
    if config.loss == "dpo" and config.reference == "online":
        steps.append(("reference=cached", {"reference": "cached"}, None))
    if not config.cpu_offload:
        steps.append(("cpu_offload=true", {"cpu_offload": True}, None))
    steps.append(("lora_r=16 (LoRA adapters on all projections)", {},
                  lora_trainable_params(facts)))
    out, current, trainable = [], config, None
    for text, change, lora in steps:
        current = dataclasses.replace(current, **change)
        trainable = lora if lora is not None else trainable
        peak = plan(current, facts, nproc, device, trainable).peak
        out.append((text, peak))
        if peak <= budget:
            break
    return out


def _gib(n: int) -> str:
    return f"{n / GiB:8.2f} GiB"


def report(config: TrainConfig, facts: ModelFacts, result: Plan, budget: int, nproc: int,
           device: str) -> str:
    tokens = config.micro_batch_size * config.max_length * (1 if config.loss == "sft" else 2)
    lines = [f"model: {facts.params / 1e6:.1f}M parameters (H={facts.hidden}, "
             f"I={facts.intermediate}, L={facts.layers}, V={facts.vocab}); loss {config.loss}, "
             f"{tokens} tokens per micro-batch (micro_batch_size={config.micro_batch_size}, "
             f"max_length={config.max_length}), {nproc} process(es) on {device}",
             "", "per device:"]
    lines += [f"  {name:<28}{_gib(size)}" for name, size in result.parts.items()]
    if result.host_parts:
        lines.append("  in host memory (cpu_offload): "
                     + ", ".join(f"{k} {v / GiB:.2f} GiB" for k, v in result.host_parts.items()))
    lines.append(f"  {'optimizer step (logged)':<28}{_gib(result.optimizer_phase)}"
                 "  (after the backward: weights, gradients, moments, AdamW temporaries)")
    if result.reference_phase is not None:
        lines.append(f"  {'cached-reference pass':<28}{_gib(result.reference_phase)}"
                     "  (before training)")
    verdict = "fits" if result.peak <= budget else "does NOT fit"
    lines += [f"  {'peak':<28}{_gib(result.peak)}", "",
              f"{verdict} in {budget / GiB:.2f} GiB per device"]
    return "\n".join(lines)


def suggestions_report(tried: list[tuple[str, int]], budget: int) -> str:
    """The ``suggestions`` as printed under a plan that does not fit."""
    lines = ["to fit, try (cumulative):"]
    for text, peak in tried:
        mark = "fits" if peak <= budget else ""
        lines.append(f"  + {text:<48}{_gib(peak)}  {mark}".rstrip())
    if tried and tried[-1][1] > budget:
        lines.append("  still too large: more processes (--nproc), a shorter max_length or a "
                     "larger device")
    return "\n".join(lines)
