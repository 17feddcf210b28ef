"""The IPO example of docs/custom-loss.md, run as written, against IPO on float64 logits."""

import re
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "custom-loss.md"


def _example_class():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    namespace = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)  # noqa: S102 - our own doc
    return namespace["FusedLinearIPOLoss"]


def _ipo_reference(weight, hidden, labels, bias, ref_w, ref_l, tau):
    logits = hidden.double() @ weight.double().T + bias.double()
    mask = labels != -100
    logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    sums = (logp * mask).sum(-1)
    b = sums.shape[0] // 2
    h = (sums[:b] - ref_w.double()) - (sums[b:] - ref_l.double())
    return ((h - 1 / (2 * tau)) ** 2).mean()


@pytest.mark.parametrize("single_pass", [False, True])
def test_ipo_example_matches_float64_formula(single_pass):
    ipo = _example_class()
    gen = torch.Generator().manual_seed(0)
    b, t, h, v = 3, 7, 16, 37
    hidden = torch.randn(2 * b, t, h, generator=gen, requires_grad=True)
    weight = (0.3 * torch.randn(v, h, generator=gen)).requires_grad_()
    bias = (0.1 * torch.randn(v, generator=gen)).requires_grad_()
    labels = torch.randint(0, v, (2 * b, t), generator=gen)
    labels[:, :2] = -100
    labels[1, 5:] = -100
    ref_w, ref_l = -30 + torch.randn(b, generator=gen), -32 + torch.randn(b, generator=gen)
    loss, metrics = ipo(tau=0.1, backend="torch", single_pass=single_pass)(
        weight, hidden, labels, bias, ref_chosen_logps=ref_w, ref_rejected_logps=ref_l)
    loss.backward()
    leaves = [hidden, weight, bias]
    ours = [loss.detach()] + [x.grad.clone() for x in leaves]
    for x in leaves:
        x.grad = None
    truth = _ipo_reference(weight, hidden, labels, bias, ref_w, ref_l, 0.1)
    truth.backward()
    expected = [truth.detach()] + [x.grad for x in leaves]
    for got, want in zip(ours, expected):
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-4, atol=1e-5)
    assert metrics["margins"].shape == (b,)


def test_ipo_example_rejects_bad_tau():
    with pytest.raises(ValueError, match="tau must be > 0"):
        _example_class()(tau=0)
