"""Per-step metrics of the trainer, reduced over all processes (what ``metrics.jsonl`` gets).

Every step: ``loss`` and ``tokens``. Stage 2 adds, as means over the step's pairs:

* ``chosen_logps`` / ``rejected_logps``: summed log-probs lp(y) of the completions;
* ``chosen_logps_avg`` / ``rejected_logps_avg``: length-normalized, lp(y) / |y|;
* ``chosen_length`` / ``rejected_length``: completion tokens |y|;
* ``reward_margins`` and ``reward_accuracy`` (the share of pairs whose margin is > 0):
  the loss's own rewards (DPO, SimPO), else the normalized log-prob margin;
* ``neg_weight_mean`` / ``_min`` / ``_max``: REDI's negative reweighting weights
  ``exp(gamma * lp(y_l) / |y_l|)``, when reweighting is on;
* ``dpo_sigmoid_coef``: DPO's gradient coefficient ``sigmoid(-margin)``, the factor by
  which each pair's gradient is scaled (1: not yet separated, 0: saturated).

``step_with_update_norm(optimizer, model)``: the optimizer step, and the L2 norm of the
parameter change it made (``update_norm``; the paper plots it to show DPO's and symmetric
REDI's collapse), over all shards, with no copy of the weights.
"""

from __future__ import annotations

import torch


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def step_with_update_norm(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> float:
    """``optimizer.step()``, returning || theta_after - theta_before ||_2 over every process's
    shards of the trained parameters (collective; frozen ones do not move).

    Measured one parameter at a time so that no copy of the weights is kept: every other
    parameter's gradient is set aside (the optimizer skips a parameter without one, and its
    state, step count included, is per parameter), this one's shard is saved, stepped and
    compared. The steps are the ones a single ``optimizer.step()`` makes, bit for bit. The
    difference of two nearby floats is exact, so each norm is taken in the parameter's dtype
    and only summed in float64."""
    params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
    grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    device = _local(params[0]).device if params else torch.device("cpu")
    square = torch.zeros((), dtype=torch.float64, device=device)
    for p, grad in zip(params, grads, strict=True):
        p.grad = grad
        before = _local(p.detach()).clone()
        optimizer.step()
        square += torch.linalg.vector_norm(_local(p.detach()) - before).double().square()
        del before
        p.grad = None
    for p, grad in zip(params, grads, strict=True):
        p.grad = grad
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(square)
    return float(square.sqrt())


class StepMetrics:
    """Sums (and the weights' extremes) over this process's micro-batches, then reduced
    over all processes."""

    PAIR_KEYS = ("chosen_logps", "rejected_logps", "chosen_logps_avg", "rejected_logps_avg",
                 "chosen_length", "rejected_length", "reward_margins", "reward_accuracy",
                 "neg_weight_mean", "dpo_sigmoid_coef")
    KEYS = ("loss", "tokens", "pairs", "weighted_pairs", "dpo_pairs", *PAIR_KEYS)

    def __init__(self, device, loss: str = "redi"):
        self.loss = loss
        self.sums = torch.zeros(len(self.KEYS), dtype=torch.float64, device=device)
        # -min and max of the reweighting weights, reduced with MAX
        self.extremes = torch.full((2,), float("-inf"), dtype=torch.float64, device=device)

    def add(self, loss, metrics: dict, batch: dict):
        values = dict.fromkeys(self.KEYS, 0.0)
        values["loss"] = loss.detach()
        values["tokens"] = batch["num_tokens"]
        if "chosen_logps" in metrics:
            lp_w, lp_l = metrics["chosen_logps"], metrics["rejected_logps"]
            len_w, len_l = metrics["chosen_tokens"], metrics["rejected_tokens"]
            avg_w, avg_l = lp_w / len_w, lp_l / len_l
            margins = metrics["reward_margins"] if "reward_margins" in metrics else avg_w - avg_l
            values.update(
                pairs=lp_w.numel(), chosen_logps=lp_w.sum(), rejected_logps=lp_l.sum(),
                chosen_logps_avg=avg_w.sum(), rejected_logps_avg=avg_l.sum(),
                chosen_length=len_w.sum(), rejected_length=len_l.sum(),
                reward_margins=margins.sum(), reward_accuracy=(margins > 0).sum())
            if self.loss == "dpo":
                values["dpo_pairs"] = margins.numel()
                values["dpo_sigmoid_coef"] = torch.sigmoid(-margins).sum()
        if "neg_weights" in metrics:
            w = metrics["neg_weights"].double()
            values["weighted_pairs"] = w.numel()
            values["neg_weight_mean"] = w.sum()
            if w.numel():
                self.extremes = torch.maximum(self.extremes, torch.stack([-w.min(), w.max()]))
        self.sums += torch.stack([torch.as_tensor(values[k], dtype=torch.float64,
                                                  device=self.sums.device) for k in self.KEYS])

    def reduce(self, world_size: int) -> dict:
        torch.distributed.all_reduce(self.sums)
        torch.distributed.all_reduce(self.extremes, op=torch.distributed.ReduceOp.MAX)
        s = dict(zip(self.KEYS, self.sums.tolist()))
        out = {"loss": s["loss"] / world_size, "tokens": s["tokens"]}
        if s["pairs"]:
            for key in self.PAIR_KEYS[:-2]:
                out[key] = s[key] / s["pairs"]
        if s["dpo_pairs"]:
            out["dpo_sigmoid_coef"] = s["dpo_sigmoid_coef"] / s["dpo_pairs"]
        if s["weighted_pairs"]:
            neg_min, weight_max = self.extremes.tolist()
            out.update(neg_weight_mean=s["neg_weight_mean"] / s["weighted_pairs"],
                       neg_weight_min=-neg_min, neg_weight_max=weight_max)
        return out
