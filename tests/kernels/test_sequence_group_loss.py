"""redi.sequence_group_loss against float64 full logits, on groups of three sequences whose
tokens are interleaved, with a non-linear loss of the sums written here."""

import math

import pytest
import torch
import torch.nn.functional as F
from probes import MaxBytes
from reference import leaf64, log_floor_between, token_logprobs64

import redi

BACKENDS = ["torch", "triton"]
# 7 sequences: 3 (all labels ignored) is in no group, 1 (all labels ignored) is grouped
GROUPS = torch.tensor([[4, 0, 6], [2, 5, 1]])


def make_problem(n=47, h=31, v=123, dtype=torch.float32, bias=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen)
    weight = torch.randn(v, h, generator=gen) / h**0.5 * 3
    b = torch.randn(v, generator=gen) if bias else None
    labels = torch.randint(0, v, (n,), generator=gen)
    seq_index = torch.randint(0, 7, (n,), generator=gen)
    seq_index[:7] = torch.arange(7)  # every id is used
    labels[torch.rand(n, generator=gen) < 0.2] = -100
    labels[(seq_index == 1) | (seq_index == 3)] = -100
    cast = lambda t: None if t is None else t.to(dtype).requires_grad_(True)  # noqa: E731
    return cast(hidden), cast(weight), cast(b), labels, seq_index


def group_loss(s):
    """One non-linear term per group (a, b, c): each sum's gradient depends on its group."""
    a, b, c = (s[GROUPS[:, k]] for k in range(3))
    return (F.logsigmoid(0.05 * (a - b)) * torch.tanh(0.02 * c) + 1e-3 * a**2).sum()


def reference(hidden, weight, bias, labels, seq_index, temperature=1.0, softcap=None,
              floor=None):
    """The loss of the sums (of max(logp_i, f_i), a clamp per token, with floors f), its
    gradients, and the sums of logp themselves."""
    x, w, b = leaf64(hidden), leaf64(weight), leaf64(bias)
    logp = token_logprobs64(x, w, labels, b, temperature, softcap=softcap)
    seen = logp if floor is None else logp.clamp(min=floor.double())
    sums = torch.zeros(7, dtype=torch.float64).index_add(0, seq_index, logp)
    loss = group_loss(torch.zeros(7, dtype=torch.float64).index_add(0, seq_index, seen))
    loss.backward()
    return loss.detach(), sums.detach(), x.grad, w.grad, None if b is None else b.grad


def assert_close64(actual, expected, tol):
    torch.testing.assert_close(actual.double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias,temperature,softcap", [
    (False, 1.0, None), (True, 0.7, None), (True, 0.7, 2.0)],
    ids=["no_bias", "bias_temp0.7", "bias_temp0.7_softcap2"])
def test_matches_float64(backend, bias, temperature, softcap, chunking):
    hidden, weight, b, labels, seq = make_problem(bias=bias)
    loss, sums = redi.sequence_group_loss(hidden, weight, labels, seq, GROUPS, group_loss,
                                          bias=b, temperature=temperature, softcap=softcap,
                                          backend=backend)
    loss.backward()
    ref_loss, ref_sums, ref_dx, ref_dw, ref_db = reference(hidden, weight, b, labels, seq,
                                                           temperature, softcap)
    assert loss.dtype == torch.float32 and not sums.requires_grad
    assert_close64(loss, ref_loss, 2e-5)
    assert_close64(sums, ref_sums, 2e-5)
    assert sums[1] == 0 and sums[3] == 0
    assert_close64(hidden.grad, ref_dx, 2e-5)
    assert_close64(weight.grad, ref_dw, 2e-5)
    assert torch.equal(hidden.grad[labels == -100], torch.zeros_like(hidden.grad[labels == -100]))
    if bias:
        assert_close64(b.grad, ref_db, 2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_floor_matches_float64(backend, chunking):
    """Floors on the second sequence of each group (0 and 5), amid their log-probs: the loss
    gets s_q = sum_i max(logp_i, f_i), the returned sums stay those of logp."""
    hidden, weight, b, labels, seq = make_problem(bias=True, seed=8)
    truth = token_logprobs64(hidden, weight, labels, b).detach()
    on = torch.isin(seq, GROUPS[:, 1])
    log_floor = log_floor_between(truth[on & (labels != -100)])
    under = on & (labels != -100) & (truth < log_floor)
    assert 0 < int(under.sum()) < int((on & (labels != -100)).sum())  # both sides hold tokens
    floor = torch.where(on, log_floor, -math.inf)
    loss, sums = redi.sequence_group_loss(hidden, weight, labels, seq, GROUPS, group_loss,
                                          bias=b, backend=backend, logprob_floor=floor)
    loss.backward()
    ref_loss, ref_sums, ref_dx, ref_dw, ref_db = reference(hidden, weight, b, labels, seq,
                                                           floor=floor)
    assert abs(reference(hidden, weight, b, labels, seq)[0] - ref_loss) > 1e-3  # it binds
    assert_close64(loss, ref_loss, 2e-5)
    assert_close64(sums, ref_sums, 2e-5)
    assert_close64(hidden.grad, ref_dx, 2e-5)
    assert torch.all(hidden.grad[under] == 0)
    assert_close64(weight.grad, ref_dw, 2e-5)
    assert_close64(b.grad, ref_db, 2e-5)


def test_upstream_gradient_scales_the_result():
    hidden, weight, _, labels, seq = make_problem(seed=1)
    loss, _ = redi.sequence_group_loss(hidden, weight, labels, seq, GROUPS, group_loss)
    (-2.5 * loss).backward()
    _, _, ref_dx, ref_dw, _ = reference(hidden, weight, None, labels, seq)
    assert_close64(hidden.grad, -2.5 * ref_dx, 5e-5)
    assert_close64(weight.grad, -2.5 * ref_dw, 5e-5)


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_float64_on_the_torch_backend(softcap):
    hidden, weight, b, labels, seq = make_problem(dtype=torch.float64, bias=True, seed=2)
    loss, _ = redi.sequence_group_loss(hidden, weight, labels, seq, GROUPS, group_loss,
                                       bias=b, softcap=softcap, temperature=0.9)
    loss.backward()
    ref = reference(hidden, weight, b, labels, seq, 0.9, softcap)
    assert loss.dtype == torch.float64
    for ours, truth in zip((loss, hidden.grad, weight.grad, b.grad), ref[:1] + ref[2:]):
        torch.testing.assert_close(ours, truth, rtol=1e-10, atol=1e-12)


def naive_16bit(hidden, weight, labels, seq_index):
    x, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    logp = torch.log_softmax(x @ w.T, dim=-1)
    valid = labels != -100
    logp = logp.gather(-1, torch.where(valid, labels, 0).unsqueeze(-1)).squeeze(-1) * valid
    loss = group_loss(torch.zeros(7, dtype=logp.dtype).index_add(0, seq_index, logp))
    loss.backward()
    return loss.detach(), x.grad, w.grad


@pytest.mark.parametrize("backend,dtype", [("torch", torch.bfloat16), ("torch", torch.float16),
                                           ("triton", torch.float16)])
def test_16bit_no_worse_than_naive_16bit(backend, dtype):
    hidden, weight, _, labels, seq = make_problem(n=64, h=48, v=300, dtype=dtype, seed=3)
    loss, _ = redi.sequence_group_loss(hidden, weight, labels, seq, GROUPS, group_loss,
                                       backend=backend)
    loss.backward()
    assert hidden.grad.dtype == dtype and weight.grad.dtype == dtype
    ref_loss, _, ref_dx, ref_dw, _ = reference(hidden, weight, None, labels, seq)
    naive = naive_16bit(hidden, weight, labels, seq)
    err = lambda a, r: (a.double() - r).abs().max().item()  # noqa: E731
    for ours, theirs, truth in zip((loss, hidden.grad, weight.grad), naive,
                                   (ref_loss, ref_dx, ref_dw)):
        assert err(ours, truth) <= err(theirs, truth)


def test_without_grad_gives_value_only():
    hidden, weight, _, labels, seq = make_problem(seed=4)
    with torch.no_grad():
        loss, sums = redi.sequence_group_loss(hidden, weight, labels, seq, GROUPS, group_loss)
    ref_loss, ref_sums, *_ = reference(hidden, weight, None, labels, seq)
    assert not loss.requires_grad
    assert_close64(loss, ref_loss, 2e-5)
    assert_close64(sums, ref_sums, 2e-5)


def test_gradients_are_handed_over_once():
    hidden, weight, _, labels, seq = make_problem(seed=5)
    loss, _ = redi.sequence_group_loss(hidden, weight, labels, seq, GROUPS, group_loss)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward per forward"):
        loss.backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_never_allocates_tokens_by_vocab(backend, monkeypatch):
    from redi.kernels import torch_impl, triton_impl

    n, h, v = 256, 16, 512
    chunk_bytes = 32 * v * 4
    monkeypatch.setattr(torch_impl, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(triton_impl, "CHUNK_BYTES", chunk_bytes)
    hidden, weight, _, labels, seq = make_problem(n, h, v, seed=6)
    with MaxBytes() as mode:
        loss, _ = redi.sequence_group_loss(hidden, weight, labels, seq, GROUPS, group_loss,
                                           backend=backend)
        loss.backward()
    assert mode.max_bytes <= 4 * max(chunk_bytes // 4, v * h, n * h)
    assert mode.max_bytes < n * v * 4 // 4


def test_loss_not_made_of_group_terms_is_refused():
    hidden, weight, _, labels, seq = make_problem(seed=7)
    coupled = lambda s: torch.logsumexp(0.1 * s[GROUPS.flatten()], dim=0)  # noqa: E731
    with pytest.raises(ValueError, match="not a sum of one term per group"):
        redi.sequence_group_loss(hidden, weight, labels, seq, GROUPS, coupled)


def bad_calls():
    hidden, weight, _, labels, seq = make_problem()
    ok = dict(hidden=hidden, weight=weight, labels=labels, seq_index=seq, groups=GROUPS,
              loss_fn=group_loss)
    return {
        "seq_index must be an integer tensor": dict(ok, seq_index=seq[:-1]),
        r"groups must be a non-empty \[G, K\]": dict(ok, groups=GROUPS.flatten()),
        "one group, once": dict(ok, groups=torch.tensor([[4, 0, 6], [2, 5, 4]])),
        "sequence ids >= 0": dict(ok, groups=torch.tensor([[4, 0, 6], [2, 5, -1]])),
        r"its sequence \(3\) is in no group": dict(
            ok, labels=torch.where(seq == 3, 0, labels)),
        "must return a scalar": dict(ok, loss_fn=lambda s: s),
        "hidden's last dim": dict(ok, hidden=hidden[:, :5]),
        "softcap must be": dict(ok, softcap=0),
        "temperature must be": dict(ok, temperature=-1.0),
    }


@pytest.mark.parametrize("match", list(bad_calls()))
def test_bad_input_raises_value_error(match):
    with pytest.raises(ValueError, match=match):
        redi.sequence_group_loss(**bad_calls()[match])
