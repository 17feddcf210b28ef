"""Edge cases of the public op and losses (issue 16): empty inputs and double backward."""

import pytest
import torch

from redi import losses, sequence_group_loss, token_logprobs, weighted_logprob_sum


def _inputs(rows, vocab=11, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, dim, generator=g, requires_grad=True)
    weight = torch.randn(vocab, dim, generator=g, requires_grad=True)
    labels = torch.randint(0, vocab, (rows,), generator=g)
    return hidden, weight, labels


def test_token_logprobs_on_zero_rows_has_a_working_backward():
    hidden, weight, labels = _inputs(0)
    bias = torch.randn(11, requires_grad=True)
    logp = token_logprobs(hidden, weight, labels, bias=bias, backend="torch")
    assert logp.shape == (0,) and logp.requires_grad
    (logp.sum() + 0).backward()
    for t in (hidden, weight, bias):
        assert t.grad is not None and torch.equal(t.grad, torch.zeros_like(t))


def test_empty_preference_batch_is_a_clear_error():
    weight = torch.randn(11, 6, requires_grad=True)
    hidden = torch.randn(0, 5, 6, requires_grad=True)
    labels = torch.zeros(0, 5, dtype=torch.long)
    for loss in (losses.FusedLinearREDILoss(), losses.FusedLinearSimPOLoss()):
        with pytest.raises(ValueError, match="an empty preference batch"):
            loss(weight, hidden, labels)


def _double_backward(loss, hidden):
    (grad,) = torch.autograd.grad(loss, hidden, create_graph=True)
    grad.pow(2).sum().backward()


@pytest.mark.parametrize("op", ["token_logprobs", "weighted_logprob_sum",
                                "sequence_group_loss"])
def test_double_backward_is_a_clear_error(op):
    hidden, weight, labels = _inputs(8)
    if op == "token_logprobs":
        loss = token_logprobs(hidden, weight, labels, backend="torch").sum()
    elif op == "weighted_logprob_sum":
        loss = weighted_logprob_sum(hidden, weight, labels, torch.rand(8), backend="torch")
    else:
        seq = torch.arange(8) // 4
        loss, _ = sequence_group_loss(hidden, weight, labels, seq, torch.tensor([[0, 1]]),
                                      lambda s: torch.nn.functional.logsigmoid(s[0] - s[1]),
                                      backend="torch")
    with pytest.raises(RuntimeError, match="support first-order gradients only"):
        _double_backward(loss, hidden)
