"""Independent float64 references, written with plain PyTorch on full logits."""

import torch


def logits64(hidden, weight, bias=None, temperature=1.0, softcap=None):
    """z = c tanh((h W^T + b) / c) / t (no tanh without a softcap c), float64."""
    s = hidden.double() @ weight.double().T
    if bias is not None:
        s = s + bias.double()
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    return s / temperature


def token_logprobs64(hidden, weight, labels, bias=None, temperature=1.0, ignore_index=-100,
                     softcap=None):
    """log_softmax(z)[label] of the logits above, 0 at ignored positions, float64."""
    logp = torch.log_softmax(logits64(hidden, weight, bias, temperature, softcap), dim=-1)
    valid = labels != ignore_index
    picked = logp.gather(-1, torch.where(valid, labels, 0).unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, picked, torch.zeros_like(picked))


def leaf64(t):
    return None if t is None else t.detach().double().requires_grad_(True)
