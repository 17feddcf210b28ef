"""The model: load or build a Hugging Face causal LM, shard it with FSDP2, export it back.

``CausalLMWithFusedLoss`` is the FSDP2 root. Its forward runs the causal LM's own forward
(``redi.integrations.transformers.head_inputs``: the logits of one position only) and a
fused loss on the last hidden state, so the root's hooks have the lm_head weight (or the
tied embedding) unsharded while the loss uses it, and reduce-scatter its gradient
afterwards; with tied embeddings, the embedding and head gradients add up in the one
parameter. The LM may be a PEFT model (LoRA, see ``redi.train.lora``): its forward runs the
adapters.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
from transformers import AutoModelForCausalLM

from redi.data.tokenizer import auto_tokenizer_mismatch
from redi.files import full_disk_reported, replace_dir
from redi.integrations.transformers import head_inputs, model_softcap, with_model_softcap
from redi.model_dir import check_model_dir, write_training_prompt
from redi.train import lora, packed_attention
from redi.train.config import ConfigError, TrainConfig
from redi.train.export_dir import check_export_target, check_finite, mark_export
from redi.train.model_spec import hf_config, model_source


def compute_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    if config.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[config.dtype]


def flash_attn_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def attn_implementation(config: TrainConfig) -> str:
    if config.attn_implementation != "auto":
        return config.attn_implementation
    return "flash_attention_2" if flash_attn_available() else "sdpa"


def load_causal_lm(config: TrainConfig):
    """fp32 master weights from ``config.init_from`` or ``config.model`` (a HF directory;
    its config with ``model_overrides`` applied), or a fresh model from
    ``config.model_config`` (see ``redi.train.model_spec``)."""
    attn = attn_implementation(config)
    source = model_source(config)
    if source is not None:
        check_model_dir(source)
    if source is None and not config.model_config:
        raise ConfigError("set model (a local HF directory), init_from, or model_config")
    model_config = hf_config(config)
    if source is not None:
        return AutoModelForCausalLM.from_pretrained(source, config=model_config,
                                                    dtype=torch.float32,
                                                    attn_implementation=attn)
    return AutoModelForCausalLM.from_config(model_config, attn_implementation=attn,
                                            dtype=torch.float32)


def apply_liger_patches(lm) -> bool:
    """Liger-Kernel's RMSNorm, RoPE and SwiGLU kernels (GPU only; logits untouched)."""
    if not torch.cuda.is_available() or importlib.util.find_spec("liger_kernel") is None:
        return False
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model=lm, rope=True, rms_norm=True, swiglu=True,
                                    cross_entropy=False, fused_linear_cross_entropy=False)
    return True


class CausalLMWithFusedLoss(torch.nn.Module):
    """FSDP2 root: decoder stack + fused loss on (last hidden state, lm_head weight).

    ``batch`` is a padded batch (``input_ids``, ``attention_mask``, ``position_ids``) or a
    packed one (``input_ids``, ``position_ids`` restarting per sequence, ``seq_index``,
    ``cu_seqlens``): flash-attn separates packed sequences by their positions, sdpa and eager
    attend one sequence at a time (``redi.train.packed_attention``: no [N, N] mask).

    The model's final-logit softcap (``final_logit_softcapping``, Gemma) is read from its
    config and handed to every loss: a fused loss without one takes the model's, a loss
    function gets it as ``softcap=``, and a loss that would ignore it or use another value is
    an error (``redi.integrations.transformers.with_model_softcap``).
    """

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.softcap = model_softcap(lm.config)
        base = lm.config._attn_implementation
        if base in packed_attention.BASES:  # the same attention, and packed rows without [N, N]
            lm.set_attn_implementation(packed_attention.packed_name(base))

    def forward(self, batch: dict, loss_fn, **loss_kwargs):
        decoder_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")
                          if batch.get(k) is not None}
        if "seq_index" in batch and self.lm.config._attn_implementation != "flash_attention_2":
            if not packed_attention.is_packed(self.lm.config._attn_implementation):
                raise ConfigError(f"packed batches need flash-attn, sdpa or eager attention, "
                                  f"not {self.lm.config._attn_implementation}")
            decoder_inputs.update(packed_attention.packed_inputs(batch["cu_seqlens"]))
        hidden, weight, bias = head_inputs(self.lm, allow_softcap=True, **decoder_inputs)
        loss_fn = with_model_softcap(loss_fn, self.softcap)
        return loss_fn(weight, hidden, batch["labels"], bias, **loss_kwargs)


def shard(model: CausalLMWithFusedLoss, config: TrainConfig, device: torch.device,
          trainable: bool = True) -> CausalLMWithFusedLoss:
    """Activation checkpointing (optional), then fully_shard per decoder layer and root."""
    lm = model.lm
    if config.liger_patches:
        apply_liger_patches(lm)
    if config.activation_checkpointing and trainable:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    dtype = compute_dtype(config, device)
    kwargs = {"mp_policy": MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)}
    if config.cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    model.to("cpu" if config.cpu_offload else device)
    for layer in lm.get_decoder().layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    if not trainable:
        model.requires_grad_(False)
        model.eval()
    return model


def build_model(config: TrainConfig, device: torch.device,
                trainable: bool = True) -> CausalLMWithFusedLoss:
    """The configured causal LM (with LoRA adapters when ``lora_r`` is set) as a sharded
    ``CausalLMWithFusedLoss`` (see ``shard``)."""
    lm = load_causal_lm(config)
    if config.lora_r is not None:
        try:
            lm = lora.apply_lora(lm, config)
        except ValueError as err:
            raise ConfigError(str(err)) from err
    return shard(CausalLMWithFusedLoss(lm), config, device, trainable)


def full_state_dict(model: CausalLMWithFusedLoss) -> dict:
    """Gathered CPU state dict of the wrapped HF model (collective; full on every rank)."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                  cpu_offload=True))
    return {k.removeprefix("lm."): v for k, v in state.items()}


_WARNED: set[str] = set()


def warn_once(message: str, key: str) -> None:
    """Print ``redi: warning: message`` the first time ``key`` is warned about in this
    process (a run that exports many checkpoints says it once, not per export)."""
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"redi: warning: {message} (said once per process)", file=sys.stderr)


def export_hf(model: CausalLMWithFusedLoss, tokenizer, out_dir: str | Path, is_main: bool,
              adapter_only: bool = False, source: str = "training", overwrite: bool = False,
              training_prompt: dict | None = None):
    """Write a HF model directory (safetensors, config, tokenizer, and the
    ``training_prompt`` record ``redi eval`` reads) atomically: into a
    temporary sibling, then renamed. Collective: every rank must call it. A LoRA model is
    written merged (W + s B A), or with ``adapter_only`` as its PEFT adapter alone. Refuses
    non-finite weights and an ``out_dir`` that is not ours to replace (see
    ``redi.train.export_dir``). A write that fails removes the temporary; a full disk is a
    one-line OutputError."""
    state = full_state_dict(model)
    if not is_main:
        return
    out_dir = Path(out_dir)
    check_export_target(out_dir, overwrite)
    check_finite(state, source)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    with full_disk_reported(out_dir, "model not exported; free space and rerun", tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        if lora.is_lora(model) and adapter_only:
            model.lm.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        elif lora.is_lora(model):
            model.lm.get_base_model().save_pretrained(
                tmp, state_dict=lora.merged_state(state, model.lm), safe_serialization=True)
        else:
            model.lm.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
            mismatch = auto_tokenizer_mismatch(tokenizer, tmp)
            if mismatch:
                warn_once(mismatch.replace(str(tmp), str(out_dir)),
                          key=type(tokenizer).__name__)
        if training_prompt is not None:
            write_training_prompt(tmp, **training_prompt)
        mark_export(tmp, source)
        replace_dir(tmp, out_dir)
