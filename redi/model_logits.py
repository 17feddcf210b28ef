"""A Hugging Face model's own logit transform, carried into the fused losses.

The fused ops see the lm_head's weight and bias, not the model's forward, so whatever the
model does to the head's output after the matmul must be passed to them, or a loss trains a
distribution the model does not have. Gemma 2 (and Gemma 3, PaliGemma, ...) soft-cap their
final logits: with ``config.final_logit_softcapping`` = c they are c tanh(lm_head(h) / c),
the fused ops' ``softcap=c``.

Other models scale the head's output with config fields whose meaning depends on the model
(Granite divides by ``logits_scaling``, HyperCLOVA X multiplies by it; Cohere multiplies by
``logit_scale``): those are refused with an error naming the field, never guessed.

No import of transformers: a config is read through its attributes.
"""

from __future__ import annotations

import inspect

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
    * A function with a ``softcap`` parameter (``redi.pair_logps``) is called with it.
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
