"""Hugging Face models in the fused losses: the two things a loss needs from a model that it
does not see by itself. Library layer: imports nothing beyond torch (no import of
transformers: a model is used through its forward, a config through its attributes).

**The head's inputs** (``head_inputs``), through the model's own forward.
``head_inputs(model, **inputs)`` returns ``(hidden, weight, bias)``: the final hidden states
(what the LM head multiplies, ``[B, T, H]``) and the head's weight ``[V, H]`` and bias (or
None), for a fused loss ``loss_fn(weight, hidden, labels, bias)``.

It calls ``model(**inputs, output_hidden_states=True, logits_to_keep=1)``, the forward of
whatever ``model`` is (a bare ``PreTrainedModel``, a PEFT ``PeftModel``, a DDP or FSDP
wrapper, an FSDP2-sharded module), so that the wrapper's hooks run: the head computes the
logits of one position only, and a forward hook on the head records the weight it ran
with. Under FSDP2 that is the unsharded parameter, under DDP the parameter itself, so the
head's gradient from the fused loss is reduced with the others; tied heads give the shared
embedding. The returned hidden states are checked against the head's own input at the last
position, so a model whose last hidden state is not what the head sees is an error, not a
wrong loss.

A PEFT adapter on the head (LoRA on ``lm_head``) is refused: its weight is ``W + s B A``,
which the head's ``weight`` attribute does not hold. ``modules_to_save=["lm_head"]`` works
(the trained copy is the one that runs).

**The model's logit transform** (``model_softcap``, ``with_model_softcap``), carried into
the fused losses. The fused ops see the lm_head's weight and bias, not the model's forward,
so whatever the model does to the head's output after the matmul must be passed to them, or
a loss trains a distribution the model does not have. Gemma 2 (and Gemma 3, PaliGemma,
...) soft-cap their final logits: with ``config.final_logit_softcapping`` = c they are
c tanh(lm_head(h) / c), the fused ops' ``softcap=c``.

Other models scale the head's output with config fields whose meaning depends on the model
(Granite divides by ``logits_scaling``, HyperCLOVA X multiplies by it; Cohere multiplies by
``logit_scale``): those are refused with an error naming the field, never guessed.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from redi.kernels.logit_transform import LogitTransform

SOFTCAP_FIELD = "final_logit_softcapping"
UNSUPPORTED_SCALE_FIELDS = ("logit_scale", "logits_scaling", "output_multiplier",
                            "lm_head_multiplier")


def model_softcap(config) -> float | None:
    """The final-logit softcap of a Hugging Face model config (of its text config for a
    multimodal one), or None. ValueError if the config scales its logits in a way the fused
    losses do not reproduce."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for field in UNSUPPORTED_SCALE_FIELDS:
        value = getattr(text, field, None)
        if value is not None and value != 1:
            raise ValueError(
                f"the model config sets {field}={value}, a scaling of its logits that the "
                "fused losses do not apply; train this model with full logits")
    return getattr(text, SOFTCAP_FIELD, None)


def with_model_softcap(loss_fn, softcap: float | None):
    """``loss_fn`` made to compute the log-probs of a model whose final-logit softcap is
    ``softcap`` (None: no cap). ``loss_fn`` is called ``(weight, hidden, labels, bias, ...)``.

    * A fused loss (``redi.FusedLinear*Loss``, or any object with a ``softcap`` attribute)
      without a softcap of its own gets the model's (set on it); one with another softcap is
      refused (ValueError), as is one with a softcap when the model has none.
    * A function with a ``softcap`` parameter (``redi.pair_logprobs``) is called with it.
    * Anything else is refused when the model has a softcap: it would ignore it.
    """
    if hasattr(loss_fn, "softcap"):
        if loss_fn.softcap is None and softcap is not None:
            loss_fn.softcap = LogitTransform(softcap=softcap).softcap  # validated
        if loss_fn.softcap != softcap:
            raise ValueError(
                f"the loss has softcap={loss_fn.softcap} but the model's "
                f"{SOFTCAP_FIELD} is {softcap}: the loss would not train the model's logits")
        return loss_fn
    if "softcap" in _parameters(loss_fn):
        return lambda *args, **kwargs: loss_fn(*args, softcap=softcap, **kwargs)
    if softcap is not None:
        raise ValueError(
            f"the model's logits are soft-capped ({SOFTCAP_FIELD}={softcap}) but "
            f"{getattr(loss_fn, '__name__', type(loss_fn).__name__)} takes no softcap: it "
            "would compute the log-probs of uncapped logits")
    return loss_fn


def _parameters(fn) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # builtins without a signature
        return ()


class HeadError(ValueError):
    """A model whose head the fused loss cannot take (or would take wrongly)."""


def _unwrap(model: torch.nn.Module) -> Any:
    """The module that has ``get_output_embeddings``: the model itself, or the one a DDP /
    FSDP1 wrapper holds in ``.module``. Only to *find* the head; the forward stays the
    wrapper's. (Any: a Hugging Face model, known by the methods it has.)"""
    found: Any = model
    while not hasattr(found, "get_output_embeddings") and hasattr(found, "module"):
        found = found.module
    if not hasattr(found, "get_output_embeddings"):
        raise HeadError(f"{type(found).__name__} is not a Hugging Face causal LM "
                        "(no get_output_embeddings)")
    return found


def _is_adapter_layer(module: torch.nn.Module) -> bool:
    """A PEFT tuner layer (LoRA and kin) wraps the original layer as ``base_layer``."""
    return hasattr(module, "base_layer") and hasattr(module, "active_adapters")


def _running_linears(head: Any) -> list[torch.nn.Module]:
    """The head's modules that may compute the logits: the head, or for PEFT's
    ``ModulesToSaveWrapper`` its original and its trainable copies (one of them runs).
    (Any: PEFT's wrappers are known by the attributes they have.)"""
    if _is_adapter_layer(head) and not getattr(head, "disable_adapters", False) \
            and not getattr(head, "merged", False):
        raise HeadError(
            "a PEFT adapter sits on the LM head (e.g. LoRA with lm_head among the target "
            "modules): the fused loss would use the head's base weight and ignore the "
            "adapter; leave lm_head out of the targets (or use modules_to_save)")
    if _is_adapter_layer(head):
        return [head.base_layer]
    copies = getattr(head, "modules_to_save", None)
    if isinstance(copies, torch.nn.ModuleDict):
        return [head.original_module, *copies.values()]
    return [head]


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The LM head module of ``model`` (through DDP/FSDP1 ``.module`` and PEFT wrappers)."""
    head = _unwrap(model).get_output_embeddings()
    if head is None:
        raise HeadError(f"{type(model).__name__} has no output embeddings (LM head)")
    return head


def logit_softcap(model: torch.nn.Module) -> float | None:
    """The final-logit softcap of ``model`` (through its wrappers), or None: the rule of
    ``model_softcap`` (which also refuses logit scalings it cannot apply)."""
    config = getattr(_unwrap(model), "config", None)
    return None if config is None else model_softcap(config)


def head_inputs(model: torch.nn.Module, *, allow_softcap: bool = False,
                **inputs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(hidden [B, T, H], weight [V, H], bias [V] or None)`` from ``model``'s forward.

    ``inputs`` are the forward's keyword arguments (``input_ids``, ``attention_mask``, ...).
    The model must accept ``logits_to_keep`` and ``output_hidden_states`` (every HF causal
    LM of transformers >= 4.50 does). Raises ``HeadError`` for a model whose head the fused
    loss would misrepresent (an adapter on the head, a last hidden state that is not the
    head's input), and one whose config sets a final-logit softcap unless the caller
    passes ``allow_softcap=True`` (and ``logit_softcap(model)`` on to its loss).
    """
    if not allow_softcap and logit_softcap(model) is not None:
        raise HeadError(f"the model's config sets final_logit_softcapping="
                        f"{logit_softcap(model)}: pass it to the fused loss (and "
                        "allow_softcap=True here), or the loss would ignore it")
    seen: dict[str, Any] = {}

    def record(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        seen["weight"], seen["bias"], seen["input"] = module.weight, module.bias, args[0]

    handles = [m.register_forward_hook(record) for m in _running_linears(output_head(model))]
    try:
        outputs = model(**inputs, output_hidden_states=True, logits_to_keep=1, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    if "weight" not in seen:
        raise HeadError("the model's forward did not run its LM head")
    hidden = outputs.hidden_states[-1]
    with torch.no_grad():
        last = hidden[:, -1:].to(seen["input"].dtype)
        # equal_nan: a diverged model's NaN activations are the trainer's to report
        if last.shape != seen["input"].shape or not torch.allclose(
                last, seen["input"], rtol=0, atol=0, equal_nan=True):
            raise HeadError("the model's last hidden state is not the LM head's input "
                            "(a final norm or scale outside hidden_states?): the fused "
                            "loss cannot stand in for this head")
    return hidden, seen["weight"], seen["bias"]
