"""REDI, DPO, SimPO and SFT losses on per-sequence log-probabilities.

For trainers that compute log-probs themselves. Every function takes, per pair,
``lp(y) = sum_t log p(y_t | x, y_<t)`` over the completion tokens (``[B]`` tensors) and, where
the loss is length-normalized, the completion token counts ``|y|`` (``[B]``, the final EOS
included). Each returns ``(loss, metrics)``: the batch loss (mean over pairs, or over
``num_pairs`` when given, e.g. the global pair count under gradient accumulation) and a
dict of detached per-pair tensors for logging.

Notation: ``n(y) = lp(y) / |y|``, the length-normalized log-prob; sigma the logistic function.
"""

from __future__ import annotations

from numbers import Real

import torch
import torch.nn.functional as F

from redi.loss_defaults import DPO_BETA, REDI_ALPHA, REDI_CHOSEN_COEF, SIMPO_BETA, SIMPO_GAMMA


def check_redi_args(alpha: float, chosen_coef: float, neg_reweight_gamma: float | None,
                    negative_floor: float | None = None):
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 = SFT on positives, 1 = symmetric), "
                         f"got {alpha}")
    if chosen_coef <= 0:
        raise ValueError(f"chosen_coef must be > 0, got {chosen_coef}")
    if neg_reweight_gamma is not None and neg_reweight_gamma < 0:
        raise ValueError(f"neg_reweight_gamma must be >= 0 or None, got {neg_reweight_gamma}")
    if negative_floor is not None and (isinstance(negative_floor, bool) or not isinstance(
            negative_floor, Real) or not 0.0 < negative_floor < 1.0):
        raise ValueError(f"negative_floor must be a probability in (0, 1) or None (off), got "
                         f"{negative_floor!r}")


def check_beta(beta: float):
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def check_count(name: str, value):
    """A loss normalizer given by the caller (``num_pairs``, ``num_tokens``) must be > 0: a
    negative one flips the loss's sign (gradient ascent), 0 makes it infinite."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _num_pairs(chosen_logps: torch.Tensor, num_pairs: int | float | None) -> float:
    n = chosen_logps.shape[0] if num_pairs is None else num_pairs
    return float(check_count("num_pairs", n))


def _pair_metrics(chosen_logps, rejected_logps, chosen_lengths=None, rejected_lengths=None):
    metrics = {"chosen_logps": chosen_logps.detach(), "rejected_logps": rejected_logps.detach()}
    if chosen_lengths is not None:
        metrics["chosen_logps_avg"] = (chosen_logps / chosen_lengths).detach()
        metrics["rejected_logps_avg"] = (rejected_logps / rejected_lengths).detach()
    return metrics


def _reward_metrics(metrics, chosen_rewards, rejected_rewards):
    margins = (chosen_rewards - rejected_rewards).detach()
    metrics.update(chosen_rewards=chosen_rewards.detach(),
                   rejected_rewards=rejected_rewards.detach(), reward_margins=margins,
                   reward_accuracy=(margins > 0).float().mean())
    return metrics


def redi_sequence_weights(chosen_lengths, rejected_lengths, *, alpha=REDI_ALPHA,
                          chosen_coef=REDI_CHOSEN_COEF,
                          num_pairs=None):
    """dL/dlp for each chosen and rejected sequence of the (linear) REDI loss.

    L = (1/B) sum_pairs [ -chosen_coef * lp(y_w) / |y_w| + alpha * lp(y_l) / |y_l| ], so
    dL/dlp(y_w) = -chosen_coef / (B |y_w|) and dL/dlp(y_l) = alpha / (B |y_l|): constants
    known before any log-prob is computed. The fused loss feeds them to the single-pass op.
    """
    check_redi_args(alpha, chosen_coef, None)
    b = _num_pairs(chosen_lengths, num_pairs)
    return -chosen_coef / (b * chosen_lengths), alpha / (b * rejected_lengths)


def redi_loss(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, *,
              alpha=REDI_ALPHA, chosen_coef=REDI_CHOSEN_COEF, neg_reweight_gamma=None,
              num_pairs=None):
    """REDI (arXiv 2505.24850): reference-free, length-normalized, asymmetric.

        L = mean_pairs[ -chosen_coef * n(y_w) + alpha * w * n(y_l) ]

    with w = 1, or, with the public recipe's optional negative reweighting,
    w = exp(neg_reweight_gamma * n(y_l)) (gradient flows through w, as in the recipe, so a
    negative with n(y_l) < -1/neg_reweight_gamma is pushed up: see FusedLinearREDILoss).
    alpha = 0 is SFT on the positives; alpha = 1 the symmetric objective. Paper default:
    alpha = 0.8, chosen_coef = 1, no reweighting.
    """
    check_redi_args(alpha, chosen_coef, neg_reweight_gamma)
    metrics = _pair_metrics(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths)
    if neg_reweight_gamma is None:
        w_chosen, w_rejected = redi_sequence_weights(
            chosen_lengths, rejected_lengths, alpha=alpha, chosen_coef=chosen_coef,
            num_pairs=num_pairs)
        loss = (w_chosen * chosen_logps).sum() + (w_rejected * rejected_logps).sum()
        return loss, metrics
    b = _num_pairs(chosen_logps, num_pairs)
    chosen_avg = chosen_logps / chosen_lengths
    rejected_avg = rejected_logps / rejected_lengths
    neg_weights = torch.exp(neg_reweight_gamma * rejected_avg)
    metrics["neg_weights"] = neg_weights.detach()
    loss = (-chosen_coef * chosen_avg + alpha * neg_weights * rejected_avg).sum() / b
    return loss, metrics


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *,
             beta=DPO_BETA, loss_type="sigmoid", num_pairs=None):
    """DPO (sigmoid): L = mean_pairs -log sigma(beta [(lp_w - lp_ref_w) - (lp_l - lp_ref_l)]).

    Summed (not averaged) log-probs; the reference is the frozen SFT model. Rewards are
    beta (lp - lp_ref).
    """
    check_beta(beta)
    if loss_type != "sigmoid":
        raise ValueError(f"loss_type must be 'sigmoid', got {loss_type!r}")
    for name, ref in (("ref_chosen_logps", ref_chosen_logps),
                      ("ref_rejected_logps", ref_rejected_logps)):
        if not isinstance(ref, torch.Tensor) or ref.shape != chosen_logps.shape:
            raise ValueError(f"{name} must be a tensor of shape {tuple(chosen_logps.shape)} "
                             "(summed log-probs of the frozen reference, one per pair)")
    b = _num_pairs(chosen_logps, num_pairs)
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps.to(chosen_logps.dtype))
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps.to(rejected_logps.dtype))
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).sum() / b
    return loss, _reward_metrics(_pair_metrics(chosen_logps, rejected_logps),
                                 chosen_rewards, rejected_rewards)


def simpo_loss(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, *,
               beta=SIMPO_BETA, gamma=SIMPO_GAMMA, num_pairs=None):
    """SimPO: L = mean_pairs -log sigma(beta [n(y_w) - n(y_l)] - gamma); reference-free.

    Rewards are beta n(y). Paper's Stage-2 baseline: beta = 2, gamma = 1.
    """
    check_beta(beta)
    b = _num_pairs(chosen_logps, num_pairs)
    chosen_rewards = beta * chosen_logps / chosen_lengths
    rejected_rewards = beta * rejected_logps / rejected_lengths
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma).sum() / b
    metrics = _pair_metrics(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths)
    return loss, _reward_metrics(metrics, chosen_rewards, rejected_rewards)


def sft_loss(logps, lengths, *, num_tokens=None):
    """SFT: mean negative log-likelihood over completion tokens, L = -sum lp / sum |y|.

    ``num_tokens`` overrides the denominator (e.g. the global token count of an
    accumulated batch). A batch without completion tokens has loss 0 (as the fused loss).
    Metrics as ``FusedLinearSFTLoss``: ``nll`` (the loss) and ``tokens`` (completion tokens).
    """
    total = (lengths.sum().clamp(min=1) if num_tokens is None
             else check_count("num_tokens", num_tokens))
    loss = -logps.sum() / total
    return loss, {"nll": loss.detach(), "tokens": lengths.sum().detach()}
