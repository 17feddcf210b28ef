"""The logits the fused ops take log-probabilities of: a linear head, an optional soft cap,
a temperature.

For a hidden state x, the head's weight W and bias b, a softcap c and a temperature tau::

    s = x W^T + b                       the head's raw output
    z = c tanh(s / c) / tau             with a softcap (Gemma 2's final_logit_softcapping)
    z = s / tau                         without

The order is the models' and the samplers': the soft cap is part of the model (Hugging Face's
Gemma applies it to the lm_head output), the temperature divides the model's final logits
(as ``TemperatureLogitsWarper`` and TRL's GRPO do). So ``softcap=c, temperature=1`` gives
Gemma's logits, and ``temperature=T`` the distribution it samples from at temperature T.
The temperature divides the bias too.

Backward, with dz the gradient on z (the softmax part, see ``linear_logprobs``)::

    ds = dz (1 - tanh^2(s / c)) / tau   (dz / tau without a softcap)
    dx = ds W,   dW = ds^T x,   db = sum_i ds_i
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real


def _positive(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not (
            math.isfinite(value) and float(value) > 0):
        accepted = "None or a finite number > 0" if allow_none else "a finite number > 0"
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LogitTransform:
    """``softcap`` c (None: no cap) and ``temperature`` tau, validated: one-line ValueError
    naming the argument when either is not a finite number > 0."""

    temperature: float = 1.0
    softcap: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "temperature", _positive("temperature", self.temperature))
        object.__setattr__(self, "softcap", _positive("softcap", self.softcap, allow_none=True))

    @property
    def inv_temp(self) -> float:
        return 1.0 / self.temperature
