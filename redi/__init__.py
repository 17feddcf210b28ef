"""redi: Reinforcement Distillation (REDI) for small reasoning models.

Public API (imported lazily, so ``import redi`` stays cheap):

* ``redi.token_logprobs`` / ``redi.weighted_logprob_sum``: fused per-token log-probs of a
  linear head, never materializing the [tokens x vocab] logits (``redi.kernels``);
  ``redi.sequence_group_loss``: a loss of per-sequence sums, one term per pair, single pass.
  ``backend="auto"`` runs Triton on CUDA and falls back to the chunked PyTorch path if the
  kernels fail to compile or launch; ``redi.resolved_backend`` says which one runs.
* ``redi.FusedLinearREDILoss``, ``FusedLinearDPOLoss``, ``FusedLinearSimPOLoss``,
  ``FusedLinearSFTLoss``: the fused losses, called as ``loss_fn(weight, hidden, labels)``.
  ``FusedLinearPreferenceLoss``: their base class, to add a preference loss of per-sequence
  log-prob sums (``docs/custom-loss.md``).
* ``redi.functional``: the same losses on precomputed per-sequence log-prob sums.
* ``redi.pair_logprobs``: (chosen, rejected) summed log-probs of a pair batch, fused
  (``redi.pair_logps``, its old name, still works for one release, with a DeprecationWarning).

The core install (torch + triton) is enough for all of these; the data tools, trainer,
evaluation and demo need extras (``pip install 'redi[train,eval]'``, see pyproject.toml).

Every op and loss takes ``softcap`` and ``temperature`` (Gemma-style capped, tempered logits);
``redi.integrations.transformers`` reads a Hugging Face model's cap and hands it to a loss.
"""

import warnings
from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute); attribute None exports the module itself
_EXPORTS = {
    "token_logprobs": ("redi.kernels.linear_logprobs", "token_logprobs"),
    "weighted_logprob_sum": ("redi.kernels.linear_logprobs", "weighted_logprob_sum"),
    "sequence_group_loss": ("redi.kernels.sequence_group_loss", "sequence_group_loss"),
    "resolved_backend": ("redi.kernels.backend", "resolved_backend"),
    "FusedLinearREDILoss": ("redi.losses", "FusedLinearREDILoss"),
    "FusedLinearDPOLoss": ("redi.losses", "FusedLinearDPOLoss"),
    "FusedLinearSimPOLoss": ("redi.losses", "FusedLinearSimPOLoss"),
    "FusedLinearSFTLoss": ("redi.losses", "FusedLinearSFTLoss"),
    "FusedLinearPreferenceLoss": ("redi.losses", "FusedLinearPreferenceLoss"),
    "pair_logprobs": ("redi.pair_logprob_sums", "pair_logprobs"),
    "functional": ("redi.functional", None),
}

__all__ = sorted(_EXPORTS)

# old public name -> new one: still answered for one release, with a DeprecationWarning
_DEPRECATED = {"pair_logps": "pair_logprobs"}

if TYPE_CHECKING:  # what type checkers see behind the lazy __getattr__ (tests: same names)
    from redi import functional as functional
    from redi.kernels.backend import resolved_backend as resolved_backend
    from redi.kernels.linear_logprobs import token_logprobs as token_logprobs
    from redi.kernels.linear_logprobs import weighted_logprob_sum as weighted_logprob_sum
    from redi.kernels.sequence_group_loss import sequence_group_loss as sequence_group_loss
    from redi.losses import FusedLinearDPOLoss as FusedLinearDPOLoss
    from redi.losses import FusedLinearPreferenceLoss as FusedLinearPreferenceLoss
    from redi.losses import FusedLinearREDILoss as FusedLinearREDILoss
    from redi.losses import FusedLinearSFTLoss as FusedLinearSFTLoss
    from redi.losses import FusedLinearSimPOLoss as FusedLinearSimPOLoss
    from redi.pair_logprob_sums import pair_logprobs as pair_logprobs


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        warnings.warn(f"redi.{name} is deprecated, use redi.{_DEPRECATED[name]}",
                      DeprecationWarning, stacklevel=2)
        name = _DEPRECATED[name]
    if name not in _EXPORTS:
        raise AttributeError(f"module 'redi' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    return import_module(module) if attr is None else getattr(import_module(module), attr)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
