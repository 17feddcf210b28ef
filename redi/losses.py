"""Fused linear REDI, DPO, SimPO and SFT losses: lm_head + log-probs + loss, no logits.

Called in Liger-Kernel's order::

    loss, metrics = loss_fn(lm_head.weight, hidden, labels, bias=None, **extra)

``hidden`` are the final hidden states, ``labels`` aligned with them (already shifted) with
``ignore_index`` on prompt and padding. Preference batches are padded ``[2B, T, H]`` (B
chosen rows first) or packed (see ``redi.paired_sequences``). ``metrics`` holds detached
tensors.

Every loss takes ``softcap`` and ``temperature`` (constructor arguments): the log-probs are
those of ``z = softcap * tanh((hidden W^T + b) / softcap) / temperature`` (no tanh when
``softcap`` is None). A model with Gemma-style ``final_logit_softcapping`` needs its value
here, or the losses would train a distribution the model does not have (see
``redi.integrations.transformers``).

The losses linear in the token log-probs (REDI, SFT) know dL/dlogp_t before the forward
pass, so they run the single-pass op (gradients produced with the value: 3 matmuls). DPO,
SimPO and reweighted REDI need the sequence totals first and by default run the two-pass op,
whose backward recomputes the logits (4 matmuls, no memory beyond the op's). With
``single_pass=True`` they run ``sequence_group_loss`` instead: one single pass per sequence,
each pair's gradients combined once both its sums are known (3 matmuls, plus three float32
[V, H] buffers and a [V, H] pass per sequence: faster on CPUs at any length; on a GPU,
predicted faster only for sequences over ~1300 tokens). Formulas and defaults:
``redi.functional``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from . import functional as LF
from .kernels.linear_logprobs import logp_dtype, token_logprobs, weighted_logprob_sum
from .kernels.logit_transform import LogitTransform
from .kernels.sequence_group_loss import sequence_group_loss
from .loss_defaults import DPO_BETA, REDI_ALPHA, REDI_CHOSEN_COEF, SIMPO_BETA, SIMPO_GAMMA
from .paired_sequences import PairedSequences

Metrics = dict[str, torch.Tensor]  # a loss's detached metrics, by name


class _LogitArgs:
    """The fused op's arguments a loss keeps (set by ``_set_logit_args``), with their types."""

    ignore_index: int
    backend: str
    softcap: float | None
    temperature: float


def _set_logit_args(loss, ignore_index, backend, softcap, temperature):
    """Store the fused op's arguments on ``loss``, softcap and temperature validated."""
    transform = LogitTransform(temperature, softcap)
    loss.ignore_index, loss.backend = ignore_index, backend
    loss.softcap, loss.temperature = transform.softcap, transform.temperature


def _op_args(loss) -> dict:
    return dict(ignore_index=loss.ignore_index, backend=loss.backend, softcap=loss.softcap,
                temperature=loss.temperature)


def _rejected_floors(pairs: PairedSequences, log_floor: float | None, chosen_lengths,
                     rejected_lengths) -> torch.Tensor | None:
    """Per-token log-prob floors, [N] in the log-probs' dtype: ``log_floor`` on the rejected
    sequences' tokens, -inf (none) on the chosen ones; None without a floor."""
    if log_floor is None:
        return None
    new = dict(dtype=logp_dtype(pairs.hidden), device=chosen_lengths.device)
    return pairs.token_values(torch.full(chosen_lengths.shape, -math.inf, **new),
                              torch.full(rejected_lengths.shape, log_floor, **new))


class FusedLinearPreferenceLoss(_LogitArgs, torch.nn.Module):
    """Base class of the fused preference losses; public, to add one (``docs/custom-loss.md``).

    It splits a padded or packed batch into (chosen, rejected) pairs, computes each
    sequence's summed completion log-prob ``lp(y) = sum_t log softmax(z_t)[y_t]`` with the
    fused op (never the logits; ``z_t`` is ``h_t W^T + b`` after the optional softcap and
    temperature, ``redi.kernels.logit_transform``) and applies the subclass's loss of those
    sums::

        pair_loss(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths,
                  num_pairs, **extra) -> (loss, metrics)

    ``*_logps`` are ``[B]`` sums (differentiable), ``*_lengths`` ``[B]`` completion token
    counts, ``num_pairs`` the normalizer (None: B), ``extra`` the keyword arguments given to
    ``forward`` beyond the layout (e.g. DPO's reference log-probs); ``metrics`` a dict of
    detached tensors. A loss linear in the log-probs may also define ``linear_weights``
    (dL/dlp per chosen and rejected sequence, known before the forward) to get the
    single-pass op. ``single_pass``: a non-linear loss runs ``sequence_group_loss`` instead of
    the two-pass op (see the module docstring). ``rejected_logprob_floor`` (None by default)
    bounds the rejected tokens' log-probs from below on every path (REDI's
    ``negative_floor``).
    """

    def __init__(self, ignore_index: int = -100, backend: str = "auto",
                 single_pass: bool = False, softcap: float | None = None,
                 temperature: float = 1.0):
        super().__init__()
        _set_logit_args(self, ignore_index, backend, softcap, temperature)
        self.single_pass = single_pass

    def pair_loss(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Metrics]:
        """``(loss, metrics)`` of ``(chosen_logps, rejected_logps, chosen_lengths,
        rejected_lengths, num_pairs, **extra)`` (the class docstring); each loss defines its
        own, with the ``extra`` it takes."""
        raise NotImplementedError(f"{type(self).__name__} must define pair_loss")

    def linear_weights(self, chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor,
                       num_pairs: float | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(dL/dlp chosen, dL/dlp rejected) per pair when the loss is linear, else None."""
        return None

    def rejected_logprob_floor(self) -> float | None:
        """log tau when the loss sees each rejected token's log-prob lp_i as max(lp_i, log tau)
        (a token below the floor then gets no gradient), else None."""
        return None

    def forward(self, weight: torch.Tensor, hidden: torch.Tensor, labels: torch.Tensor,
                bias: torch.Tensor | None = None, *, seq_index: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None,
                chosen_index: torch.Tensor | None = None,
                rejected_index: torch.Tensor | None = None, num_pairs: float | None = None,
                **extra: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        pairs = PairedSequences.from_batch(
            hidden, labels, self.ignore_index, seq_index=seq_index, cu_seqlens=cu_seqlens,
            chosen_index=chosen_index, rejected_index=rejected_index)
        len_w, len_l = pairs.lengths[pairs.chosen], pairs.lengths[pairs.rejected]
        op_args = dict(bias=bias, **_op_args(self))
        floors = _rejected_floors(pairs, self.rejected_logprob_floor(), len_w, len_l)
        weights = self.linear_weights(len_w, len_l, num_pairs)
        loss = None

        def batch_loss(s):
            return self.pair_loss(s[pairs.chosen], s[pairs.rejected], len_w, len_l,
                                  num_pairs, **extra)[0]

        if weights is not None:
            coef = pairs.token_values(*weights)
            loss, logp = weighted_logprob_sum(pairs.hidden, weight, pairs.labels, coef,
                                              logprob_floor=floors, return_logprobs=True,
                                              **op_args)
            sums = pairs.sequence_sums(logp)
        elif self.single_pass:
            groups = torch.stack([pairs.chosen, pairs.rejected], dim=1)
            loss, sums = sequence_group_loss(pairs.hidden, weight, pairs.labels,
                                             pairs.seq_index, groups, batch_loss,
                                             logprob_floor=floors, **op_args)
        else:
            logp = token_logprobs(pairs.hidden, weight, pairs.labels, **op_args)
            sums = pairs.sequence_sums(logp)
            if floors is not None:  # clamp's gradient is 1[lp_i >= floor], as the ops' mask
                loss = batch_loss(pairs.sequence_sums(logp.clamp(min=floors)))
        # the metrics are of the model's log-probs (``sums``: never floored)
        pair_loss, metrics = self.pair_loss(sums[pairs.chosen], sums[pairs.rejected], len_w,
                                            len_l, num_pairs, **extra)
        loss = pair_loss if loss is None else loss
        metrics.update(chosen_tokens=len_w, rejected_tokens=len_l)
        return loss, metrics


class FusedLinearREDILoss(FusedLinearPreferenceLoss):
    """REDI: mean_pairs[ -chosen_coef lp(y_w)/|y_w| + alpha w lp(y_l)/|y_l| ].

    Reference-free; alpha = 0.8 (paper default; 0 = SFT on positives, 1 = symmetric).
    ``w = 1``, or ``exp(neg_reweight_gamma * lp(y_l)/|y_l|)`` with the public recipe's
    optional negative reweighting (off by default). As in that recipe the gradient flows
    through w: d/dn [alpha e^(gamma n) n] = alpha e^(gamma n) (1 + gamma n), so a negative
    whose normalized log-prob n is below -1/gamma has its likelihood pushed up, not down.
    Without reweighting the loss is linear in the token log-probs and runs the single-pass
    fused op; with reweighting, ``single_pass`` chooses as for DPO and SimPO.

    ``negative_floor`` tau in (0, 1), beyond the paper (None, the default: off, the paper's
    loss). With lp_i the token log-probs of the rejected trace::

        lp_tau(y_l) = sum_{i in y_l} max(lp_i, log tau)
        L = mean_pairs[ -chosen_coef lp(y_w)/|y_w| + alpha w lp_tau(y_l)/|y_l| ]

    (w, when reweighting, of lp_tau too). Unbounded, the negative term rewards a lower
    log-prob of a rejected token however low it already is (in the paper symmetric REDI
    collapses at high learning rates, chosen and rejected log-probs falling together; alpha
    < 1 scales the whole term down). The floor bounds it per token instead: below
    probability tau a rejected token adds the constant alpha w log tau / |y_l| and no
    gradient (dL/dlp_i = alpha w / (B |y_l|) 1[lp_i >= log tau]). The positive term is
    unchanged. Every path takes the floor per token, where lp_i is computed: the single
    passes mask the token's coefficient once lp_i is known, the two-pass path clamps the
    returned log-probs. The metrics (``chosen_logps``, ``rejected_logps``, ...) stay those
    of the model's log-probs, not floored.
    """

    def __init__(self, alpha: float = REDI_ALPHA, chosen_coef: float = REDI_CHOSEN_COEF,
                 ignore_index: int = -100,
                 backend: str = "auto", neg_reweight_gamma: float | None = None,
                 single_pass: bool = False, softcap: float | None = None,
                 temperature: float = 1.0, negative_floor: float | None = None):
        super().__init__(ignore_index, backend, single_pass, softcap, temperature)
        LF.check_redi_args(alpha, chosen_coef, neg_reweight_gamma, negative_floor)
        self.alpha, self.chosen_coef = alpha, chosen_coef
        # gamma = 0 is w = 1: the linear loss, single pass
        self.neg_reweight_gamma = neg_reweight_gamma or None
        self.negative_floor = None if negative_floor is None else float(negative_floor)

    def rejected_logprob_floor(self):
        return None if self.negative_floor is None else math.log(self.negative_floor)

    def linear_weights(self, chosen_lengths, rejected_lengths, num_pairs):
        if self.neg_reweight_gamma is not None:
            return None
        return LF.redi_sequence_weights(chosen_lengths, rejected_lengths, alpha=self.alpha,
                                        chosen_coef=self.chosen_coef, num_pairs=num_pairs)

    def pair_loss(self, chosen_logps, rejected_logps, chosen_lengths, rejected_lengths,
                  num_pairs):
        return LF.redi_loss(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths,
                            alpha=self.alpha, chosen_coef=self.chosen_coef,
                            neg_reweight_gamma=self.neg_reweight_gamma, num_pairs=num_pairs)


class FusedLinearDPOLoss(FusedLinearPreferenceLoss):
    """DPO (sigmoid) on summed log-probs against a frozen reference.

    ``forward(weight, hidden, labels, bias=None, *, ref_chosen_logps, ref_rejected_logps)``
    with ``[B]`` summed reference log-probs (e.g. precomputed from the SFT model). The paper's
    best Stage-2 setting on its data: beta = 0.001, lr 2e-7.
    """

    def __init__(self, beta: float = DPO_BETA, loss_type: str = "sigmoid",
                 ignore_index: int = -100, backend: str = "auto", single_pass: bool = False,
                 softcap: float | None = None, temperature: float = 1.0):
        super().__init__(ignore_index, backend, single_pass, softcap, temperature)
        LF.check_beta(beta)
        if loss_type != "sigmoid":
            raise ValueError(f"loss_type must be 'sigmoid', got {loss_type!r}")
        self.beta, self.loss_type = beta, loss_type

    def pair_loss(self, chosen_logps, rejected_logps, chosen_lengths, rejected_lengths,
                  num_pairs, ref_chosen_logps=None, ref_rejected_logps=None):
        return LF.dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
                           beta=self.beta, loss_type=self.loss_type, num_pairs=num_pairs)


class FusedLinearSimPOLoss(FusedLinearPreferenceLoss):
    """SimPO: mean_pairs -log sigma(beta [lp(y_w)/|y_w| - lp(y_l)/|y_l|] - gamma).

    Reference-free; the paper's Stage-2 baseline uses beta = 2, gamma = 1, lr 5e-7.
    """

    def __init__(self, beta: float = SIMPO_BETA, gamma: float = SIMPO_GAMMA,
                 ignore_index: int = -100, backend: str = "auto", single_pass: bool = False,
                 softcap: float | None = None, temperature: float = 1.0):
        super().__init__(ignore_index, backend, single_pass, softcap, temperature)
        LF.check_beta(beta)
        self.beta, self.gamma = beta, gamma

    def pair_loss(self, chosen_logps, rejected_logps, chosen_lengths, rejected_lengths,
                  num_pairs):
        return LF.simpo_loss(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths,
                             beta=self.beta, gamma=self.gamma, num_pairs=num_pairs)


class FusedLinearSFTLoss(_LogitArgs, torch.nn.Module):
    """SFT: mean negative log-likelihood over non-ignored tokens, -sum_t logp_t / n_tokens.

    Single pass. ``num_tokens`` (> 0) overrides the denominator (the global count of an
    accumulated or data-parallel batch). A batch with no completion token has loss 0 and
    zero gradients. Padded ``[B, T, H]`` and packed ``[N, H]`` batches are the same to it.
    """

    def __init__(self, ignore_index: int = -100, backend: str = "auto",
                 softcap: float | None = None, temperature: float = 1.0):
        super().__init__()
        _set_logit_args(self, ignore_index, backend, softcap, temperature)

    def forward(self, weight: torch.Tensor, hidden: torch.Tensor, labels: torch.Tensor,
                bias: torch.Tensor | None = None, *,
                num_tokens: float | torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, Metrics]:
        tokens = (labels != self.ignore_index).sum()
        denominator = (tokens.clamp(min=1) if num_tokens is None
                       else LF.check_count("num_tokens", num_tokens))
        coef = torch.full(labels.shape, -1.0, device=labels.device) / denominator
        loss = weighted_logprob_sum(hidden, weight, labels, coef, bias=bias, **_op_args(self))
        return loss, {"nll": loss.detach(), "tokens": tokens}
