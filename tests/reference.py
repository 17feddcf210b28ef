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


def log_floor_between(logps, margin=1e-3):
    """A log-prob floor amid ``logps``: the middle of the widest gap between neighbours in
    their sorted middle half, so that some lie under it and some over it, none within
    ``margin`` (float32 and float64 log-probs then agree on which side each is)."""
    v = logps.detach().double().flatten().sort().values
    lo, hi = v.numel() // 4, max(v.numel() // 4 + 1, 3 * v.numel() // 4)
    k = lo + int((v[lo + 1: hi + 1] - v[lo:hi]).argmax())
    assert v[k + 1] - v[k] > 2 * margin, "no gap wide enough: other inputs"
    return float(v[k] + v[k + 1]) / 2
