"""LoRA adapters (PEFT) for ``redi sft`` / ``redi train``: keys ``lora_r`` (null: full
fine-tuning), ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``, ``export_adapter``.

With ``lora_r`` set, the causal LM is wrapped by ``peft.get_peft_model``: the base weights
are frozen and only the adapters train, are handed to the optimizer and are checkpointed
(the base comes back from ``model``/``init_from``/``model_config`` + seed on resume; the
checkpoint records its identity by content, so another model at the same path is refused:
``redi.train.loop.base_model``). DPO's
reference is the same model with its adapters disabled (``AdaptersDisabled``), never a
second copy. An adapter on the LM head is refused: the fused loss takes the head's weight,
which would not include it (``redi.integrations.transformers``). The export is the merged model,
W + (lora_alpha / r) B A per adapted layer (``merged_state``), or with ``export_adapter``
the adapter alone (PEFT's ``adapter_model.safetensors`` + ``adapter_config.json``).
"""

from __future__ import annotations

import torch

LORA_MARK = "lora_"  # every adapter parameter's name contains it (lora_A, lora_B, ...)


def check_lora_config(config) -> None:
    """One-line ValueError naming the key of a bad LoRA setting (ConfigError's base)."""
    if config.lora_r is None:
        return
    if config.lora_r <= 0:
        raise ValueError(f"lora_r must be >= 1 (or null for full fine-tuning), "
                         f"got {config.lora_r}")
    if not config.lora_alpha > 0:
        raise ValueError(f"lora_alpha must be > 0, got {config.lora_alpha}")
    if not 0 <= config.lora_dropout < 1:
        raise ValueError(f"lora_dropout must be in [0, 1), got {config.lora_dropout}")
    targets = config.lora_target_modules
    if isinstance(targets, list) and (not targets or not all(isinstance(t, str) and t
                                                              for t in targets)):
        raise ValueError(f"lora_target_modules must be 'all-linear' or a non-empty list of "
                         f"module names, got {targets!r}")


def _matches(module_name: str, target: str) -> bool:
    """PEFT's rule for a target name: the full module name or its last dotted parts."""
    return module_name == target or module_name.endswith("." + target)


def apply_lora(lm, config):
    """``lm`` wrapped with the configured LoRA adapters (a ``peft.PeftModel``)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ValueError("lora_r needs the 'peft' extra: pip install 'redi[peft]'") from err

    names = [name for name, _ in lm.named_modules()]
    head = next(name for name, module in lm.named_modules()
                if module is lm.get_output_embeddings())
    targets = config.lora_target_modules
    if isinstance(targets, list):
        for target in targets:
            matched = [n for n in names if _matches(n, target)]
            if not matched:
                raise ValueError(f"lora_target_modules: {target!r} matches no module of the "
                                 f"model (e.g. q_proj, v_proj, or 'all-linear')")
            if head in matched:
                raise ValueError(f"lora_target_modules: {target!r} puts an adapter on the LM "
                                 f"head ({head}), which the fused loss cannot see; leave it "
                                 "out ('all-linear' already does)")
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=targets,
                      task_type="CAUSAL_LM")
    return get_peft_model(lm, lora)


def is_lora(model: torch.nn.Module) -> bool:
    """Whether ``model`` (the trainer's root) holds a PEFT model."""
    return hasattr(getattr(model, "lm", model), "peft_config")


def checkpointed(model: torch.nn.Module, state: dict) -> dict:
    """The part of a model state dict a checkpoint holds: everything, or the adapters."""
    if not is_lora(model):
        return state
    return {k: v for k, v in state.items() if LORA_MARK in k}


class AdaptersDisabled:
    """DPO's reference under LoRA: the training model itself, adapters off (no grad)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, batch, loss_fn, **kwargs):
        with self.model.lm.disable_adapter():
            return self.model(batch, loss_fn, **kwargs)


def merged_state(state: dict, peft_model) -> dict:
    """The base model's state dict with each adapter folded in, W + (alpha / r) B A, from a
    full (gathered) state dict of the PEFT model; keys as the base model's own."""
    prefix = "base_model.model."
    adapter = peft_model.active_adapter
    lora = peft_model.peft_config[adapter]
    merged = {}
    for key, value in state.items():
        if LORA_MARK in key:
            continue
        name = key.removeprefix(prefix)
        if ".base_layer." in name:
            module = key.rsplit(".base_layer.", 1)[0]
            name = name.replace(".base_layer.", ".")
            if key.endswith(".base_layer.weight"):
                a = state[f"{module}.lora_A.{adapter}.weight"].double()
                b = state[f"{module}.lora_B.{adapter}.weight"].double()
                scale = lora.lora_alpha / lora.r
                value = (value.double() + scale * (b @ a)).to(value.dtype)
        merged[name] = value
    return merged
