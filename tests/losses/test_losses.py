"""The fused REDI, DPO, SimPO and SFT losses against their formulas, written here again with
plain PyTorch on full float64 logits, and DPO/SimPO against Liger-Kernel."""

import math

import pytest
import torch
import torch.nn.functional as F
from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss, LigerFusedLinearSimPOLoss
from reference import leaf64, log_floor_between, token_logprobs64

import redi
from redi import functional

BACKENDS = ["torch", "triton"]
B, T, H, V = 3, 9, 16, 45


def preference_batch(seed=0, dtype=torch.float32, bias=False, b=B, t=T):
    """Padded [2B, T] batch: a prompt of 2-3 ignored labels, completions of varied length,
    right padding (ignored)."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2 * b, t, H, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(V, H, generator=gen) / H**0.5 * 2).to(dtype).requires_grad_()
    bias_ = torch.randn(V, generator=gen).to(dtype).requires_grad_() if bias else None
    labels = torch.randint(0, V, (2 * b, t), generator=gen)
    for row in range(2 * b):
        prompt = 2 + row % 2
        end = t - (row * 2) % 5
        labels[row, :prompt] = -100
        labels[row, end:] = -100
    return hidden, weight, bias_, labels


def sequence_logps64(hidden, weight, bias, labels, softcap=None, temperature=1.0):
    """Per-row summed completion log-probs and completion lengths, float64."""
    logp = token_logprobs64(hidden, weight, labels, bias, temperature, softcap=softcap)
    return logp.sum(-1), (labels != -100).sum(-1).double()


def reference_loss(name, hidden, weight, bias, labels, **kw):
    logits = {k: kw[k] for k in ("softcap", "temperature") if k in kw}
    return pair_formula(name, *sequence_logps64(hidden, weight, bias, labels, **logits), **kw)


def pair_formula(name, lp, n, **kw):
    """The batch loss from per-row summed log-probs ``lp`` and lengths ``n`` (chosen first)."""
    b = lp.shape[0] // 2
    lp_w, lp_l, n_w, n_l = lp[:b], lp[b:], n[:b], n[b:]
    if name == "redi":
        w = torch.exp(kw["gamma"] * lp_l / n_l) if kw.get("gamma") is not None else 1.0
        return (-kw["chosen_coef"] * lp_w / n_w + kw["alpha"] * w * lp_l / n_l).mean()
    if name == "dpo":
        margin = (lp_w - kw["ref_w"].double()) - (lp_l - kw["ref_l"].double())
        return -F.logsigmoid(kw["beta"] * margin).mean()
    if name == "simpo":
        return -F.logsigmoid(kw["beta"] * (lp_w / n_w - lp_l / n_l) - kw["gamma"]).mean()
    raise ValueError(name)


def make_loss(name, backend, **kw):
    common = dict(backend=backend, single_pass=kw.get("single_pass", False),
                  **{k: kw[k] for k in ("softcap", "temperature") if k in kw})
    if name == "redi":
        return redi.FusedLinearREDILoss(alpha=kw["alpha"], chosen_coef=kw["chosen_coef"],
                                        neg_reweight_gamma=kw.get("gamma"),
                                        negative_floor=kw.get("tau"), **common)
    if name == "dpo":
        return redi.FusedLinearDPOLoss(beta=kw["beta"], **common)
    return redi.FusedLinearSimPOLoss(beta=kw["beta"], gamma=kw["gamma"], **common)


def reference_logps(seed):
    gen = torch.Generator().manual_seed(seed + 100)
    return -20 * torch.rand(B, generator=gen), -20 * torch.rand(B, generator=gen)


CASES = {
    "redi": dict(alpha=0.8, chosen_coef=1.0),
    "redi_coef": dict(alpha=0.3, chosen_coef=1.5),
    "redi_reweighted": dict(alpha=0.8, chosen_coef=1.0, gamma=0.5),
    "dpo": dict(beta=0.5),
    "simpo": dict(beta=2.0, gamma=1.0),
    # the non-linear losses again, through sequence_group_loss
    "redi_reweighted_single_pass": dict(alpha=0.8, chosen_coef=1.0, gamma=0.5, single_pass=True),
    "dpo_single_pass": dict(beta=0.5, single_pass=True),
    "simpo_single_pass": dict(beta=2.0, gamma=1.0, single_pass=True),
}


def grads_of(*tensors):
    return [None if t is None else t.grad for t in tensors]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("case", list(CASES))
def test_loss_matches_formula_float64(case, bias, backend):
    name, kw = case.split("_")[0], dict(CASES[case])
    hidden, weight, b, labels = preference_batch(seed=1, bias=bias)
    extra = {}
    if name == "dpo":
        extra = dict(zip(("ref_chosen_logps", "ref_rejected_logps"), reference_logps(1)))
        kw.update(ref_w=extra["ref_chosen_logps"], ref_l=extra["ref_rejected_logps"])
    loss, metrics = make_loss(name, backend, **kw)(weight, hidden, labels, b, **extra)
    loss.backward()
    x64, w64, b64 = leaf64(hidden), leaf64(weight), leaf64(b)
    ref = reference_loss(name, x64, w64, b64, labels, **kw)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(grads_of(hidden, weight, b), grads_of(x64, w64, b64)):
        if theirs is not None:
            torch.testing.assert_close(ours.double(), theirs, rtol=1e-4, atol=2e-6)
    lp, n = sequence_logps64(hidden.detach(), weight.detach(), None if b is None else
                             b.detach(), labels)
    torch.testing.assert_close(metrics["chosen_logps"].double(), lp[:B], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(metrics["rejected_logps"].double(), lp[B:], rtol=1e-5, atol=1e-5)
    assert torch.equal(metrics["chosen_tokens"], n[:B].float())
    assert torch.equal(metrics["rejected_tokens"], n[B:].float())
    assert all(not v.requires_grad for v in metrics.values())


# softcap 1.5 against logits of spread ~2: the cap changes every loss by far more than the
# tolerances below (asserted)
CAPPED = dict(softcap=1.5, temperature=0.8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_softcap_and_temperature_reach_every_loss_path(case, backend):
    """Each loss (and each of its code paths: single pass, two pass, sequence groups) takes
    the log-probs of the capped, tempered logits: against the formula on float64 logits."""
    name, kw = case.split("_")[0], dict(CASES[case], **CAPPED)
    hidden, weight, b, labels = preference_batch(seed=11, bias=True)
    extra = {}
    if name == "dpo":
        extra = dict(zip(("ref_chosen_logps", "ref_rejected_logps"), reference_logps(11)))
        kw.update(ref_w=extra["ref_chosen_logps"], ref_l=extra["ref_rejected_logps"])
    loss_fn = make_loss(name, backend, **kw)
    assert (loss_fn.softcap, loss_fn.temperature) == (1.5, 0.8)
    loss, metrics = loss_fn(weight, hidden, labels, b, **extra)
    loss.backward()
    x64, w64, b64 = leaf64(hidden), leaf64(weight), leaf64(b)
    ref = reference_loss(name, x64, w64, b64, labels, **kw)
    ref.backward()
    plain = {k: v for k, v in kw.items() if k not in CAPPED}
    uncapped = reference_loss(name, *(t.detach() for t in (x64, w64, b64)), labels, **plain)
    assert abs(uncapped - ref).item() > 1e-2
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(grads_of(hidden, weight, b), grads_of(x64, w64, b64)):
        torch.testing.assert_close(ours.double(), theirs, rtol=1e-4, atol=2e-6)
    lp, _ = sequence_logps64(x64.detach(), w64.detach(), b64.detach(), labels, **CAPPED)
    torch.testing.assert_close(metrics["chosen_logps"].double(), lp[:B], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("logits", [{}, CAPPED], ids=["plain", "capped"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_sft_matches_formula_float64(backend, logits):
    hidden, weight, b, labels = preference_batch(seed=2, bias=True)
    loss, metrics = redi.FusedLinearSFTLoss(backend=backend, **logits)(weight, hidden, labels,
                                                                      b)
    loss.backward()
    x64, w64, b64 = leaf64(hidden), leaf64(weight), leaf64(b)
    logp = token_logprobs64(x64, w64, labels, b64, logits.get("temperature", 1.0),
                            softcap=logits.get("softcap"))
    ref = -logp.sum() / (labels != -100).sum()
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(grads_of(hidden, weight, b), grads_of(x64, w64, b64)):
        torch.testing.assert_close(ours.double(), theirs, rtol=1e-4, atol=2e-6)
    assert int(metrics["tokens"]) == int((labels != -100).sum())


def test_sft_fused_and_functional_report_the_same_metrics():
    hidden, weight, _, labels = preference_batch(seed=3)
    fused, fused_metrics = redi.FusedLinearSFTLoss(backend="torch")(weight, hidden, labels)
    mask = labels != -100
    sums = (redi.token_logprobs(hidden, weight, labels, backend="torch") * mask).sum(-1)
    plain, plain_metrics = redi.functional.sft_loss(sums, mask.sum(-1))
    torch.testing.assert_close(plain, fused)
    assert sorted(plain_metrics) == sorted(fused_metrics) == ["nll", "tokens"]
    torch.testing.assert_close(plain_metrics["nll"], fused_metrics["nll"])
    assert int(plain_metrics["tokens"]) == int(fused_metrics["tokens"]) == int(mask.sum())


def test_sft_with_no_completion_token_is_zero():
    hidden, weight, _, labels = preference_batch()
    labels.fill_(-100)
    loss, _ = redi.FusedLinearSFTLoss()(weight, hidden, labels)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(weight.grad) == 0


def test_sft_num_tokens_overrides_denominator():
    hidden, weight, _, labels = preference_batch()
    local, _ = redi.FusedLinearSFTLoss()(weight, hidden, labels)
    n = int((labels != -100).sum())
    global_, _ = redi.FusedLinearSFTLoss()(weight, hidden, labels, num_tokens=4 * n)
    torch.testing.assert_close(global_, local / 4)


@pytest.mark.parametrize("num_tokens", [0, -1, float("nan"), torch.tensor(0.0)])
def test_sft_num_tokens_must_be_positive_as_num_pairs(num_tokens):
    """-1 would flip the loss's sign (gradient ascent), 0 make it infinite."""
    hidden, weight, _, labels = preference_batch()
    with pytest.raises(ValueError, match="^num_tokens must be > 0, got "):
        redi.FusedLinearSFTLoss()(weight, hidden, labels, num_tokens=num_tokens)
    with pytest.raises(ValueError, match="^num_tokens must be > 0, got "):
        functional.sft_loss(torch.zeros(2), torch.ones(2), num_tokens=num_tokens)


def test_redi_alpha_zero_is_sft_on_chosen_half():
    """With equal chosen lengths, mean over pairs of lp/|y| = token-mean NLL."""
    hidden, weight, _, labels = preference_batch(seed=3)
    labels[:B, :3] = -100
    labels[:B, 3:] = torch.randint(0, V, (B, T - 3))
    redi_loss, _ = redi.FusedLinearREDILoss(alpha=0.0)(weight, hidden, labels)
    (g_redi,) = torch.autograd.grad(redi_loss, weight)
    sft_loss, _ = redi.FusedLinearSFTLoss()(weight, hidden[:B], labels[:B])
    (g_sft,) = torch.autograd.grad(sft_loss, weight)
    torch.testing.assert_close(redi_loss, sft_loss)
    torch.testing.assert_close(g_redi, g_sft)


def to_packed(hidden, labels, order):
    """Concatenate each row's real tokens (prompt + completion, no padding) in `order`."""
    keep = [int((labels[r] != -100).nonzero().max()) + 1 for r in range(labels.shape[0])]
    h = torch.cat([hidden[r, : keep[r]] for r in order])
    y = torch.cat([labels[r, : keep[r]] for r in order])
    seq = torch.cat([torch.full((keep[r],), i) for i, r in enumerate(order)])
    cu = torch.tensor([0] + [keep[r] for r in order]).cumsum(0)
    position = {r: i for i, r in enumerate(order)}
    chosen = torch.tensor([position[r] for r in range(B)])
    rejected = torch.tensor([position[r] for r in range(B, 2 * B)])
    return h, y, seq, cu, chosen, rejected


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["redi", "redi_reweighted", "dpo", "simpo", "dpo_single_pass",
                                  "simpo_single_pass", "redi_capped", "dpo_single_pass_capped",
                                  "redi_floor", "redi_reweighted_single_pass_floor"])
@pytest.mark.parametrize("index", ["seq_index", "cu_seqlens"])
def test_padded_equals_packed(case, backend, index):
    name, kw = case.split("_")[0], CASES[case.removesuffix("_capped").removesuffix("_floor")]
    kw = dict(kw, **CAPPED) if case.endswith("_capped") else kw
    hidden, weight, _, labels = preference_batch(seed=4)
    if case.endswith("_floor"):  # tau = 0.05: some rejected tokens under it, some over
        kw = dict(kw, tau=0.05)
        lp = token_logprobs64(hidden, weight, labels)[B:][labels[B:] != -100]
        assert bool((lp < math.log(0.05)).any()) and bool((lp > math.log(0.05)).any())
    extra = {}
    if name == "dpo":
        extra = dict(zip(("ref_chosen_logps", "ref_rejected_logps"), reference_logps(4)))
    loss_fn = make_loss(name, backend, **kw)
    padded, m_padded = loss_fn(weight, hidden, labels, **extra)
    g_padded = torch.autograd.grad(padded, (weight, hidden))
    order = [0, 3, 4, 1, 5, 2]  # chosen and rejected interleaved, out of order
    h, y, seq, cu, chosen, rejected = to_packed(hidden, labels, order)
    layout = {"seq_index": seq} if index == "seq_index" else {"cu_seqlens": cu}
    packed, m_packed = loss_fn(weight, h, y, chosen_index=chosen, rejected_index=rejected,
                               **layout, **extra)
    g_w, g_h = torch.autograd.grad(packed, (weight, h))
    torch.testing.assert_close(packed, padded, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_w, g_padded[0], rtol=1e-5, atol=1e-7)
    g_h_padded = torch.cat([g_padded[1][r, : int((seq == i).sum())] for i, r in
                            enumerate(order)])
    torch.testing.assert_close(g_h, g_h_padded, rtol=1e-5, atol=1e-7)
    for key in m_padded:
        torch.testing.assert_close(m_packed[key], m_padded[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("single_pass", [False, True], ids=["two_pass", "single_pass"])
@pytest.mark.parametrize("name", ["dpo", "simpo"])
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_dpo_simpo_match_liger(name, bias, single_pass):
    hidden, weight, b, labels = preference_batch(seed=5, bias=bias)
    gen = torch.Generator().manual_seed(6)
    if name == "dpo":
        ref_hidden = torch.randn(hidden.shape, generator=gen)
        ref_weight = torch.randn(weight.shape, generator=gen) / H**0.5
        ref_lp, _ = sequence_logps64(ref_hidden, ref_weight, None, labels)
        ours_fn = redi.FusedLinearDPOLoss(beta=0.5, single_pass=single_pass)
        extra = dict(ref_chosen_logps=ref_lp[:B].float(), ref_rejected_logps=ref_lp[B:].float())
        liger_fn = LigerFusedLinearDPOLoss(beta=0.5, compiled=False, use_ref_model=True)
        liger_extra = dict(ref_input=ref_hidden, ref_weight=ref_weight)
    else:
        ours_fn = redi.FusedLinearSimPOLoss(beta=2.0, gamma=1.0, single_pass=single_pass)
        extra = {}
        liger_fn = LigerFusedLinearSimPOLoss(beta=2.0, gamma=1.0, compute_nll_loss=False,
                                             compiled=False)
        liger_extra = {}
    ours, metrics = ours_fn(weight, hidden, labels, b, **extra)
    g_ours = torch.autograd.grad(ours, [t for t in (hidden, weight, b) if t is not None])
    liger, liger_aux = liger_fn(weight, hidden, labels, b, **liger_extra)
    g_liger = torch.autograd.grad(liger, [t for t in (hidden, weight, b) if t is not None])
    torch.testing.assert_close(ours, liger, rtol=1e-5, atol=1e-6)
    for a, c in zip(g_ours, g_liger):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)
    # Liger's aux: (chosen_logps, rejected_logps, ..., chosen_rewards, rejected_rewards)
    key = "chosen_logps" if name == "dpo" else "chosen_logps_avg"
    torch.testing.assert_close(metrics[key], liger_aux[0].detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(metrics["chosen_rewards"], liger_aux[5].detach(), rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(metrics["rejected_rewards"], liger_aux[6].detach(), rtol=1e-5,
                               atol=1e-5)


def test_reward_metrics():
    hidden, weight, _, labels = preference_batch(seed=7)
    _, m = redi.FusedLinearSimPOLoss(beta=2.0)(weight, hidden, labels)
    lp, n = sequence_logps64(hidden.detach(), weight.detach(), None, labels)
    chosen, rejected = 2.0 * lp[:B] / n[:B], 2.0 * lp[B:] / n[B:]
    torch.testing.assert_close(m["reward_margins"].double(), chosen - rejected, rtol=1e-5,
                               atol=1e-5)
    assert m["reward_accuracy"].item() == pytest.approx((chosen > rejected).double().mean())


def test_functional_matches_fused():
    hidden, weight, _, labels = preference_batch(seed=8)
    fused, m = redi.FusedLinearREDILoss()(weight, hidden, labels)
    loss, _ = functional.redi_loss(m["chosen_logps"], m["rejected_logps"], m["chosen_tokens"],
                                   m["rejected_tokens"])
    torch.testing.assert_close(loss, fused.detach())


# The negative floor on each path REDI can take: the linear single pass, and with
# reweighting the two-pass op and sequence_group_loss
FLOOR_PATHS = {"linear": dict(alpha=0.8, chosen_coef=1.0),
               "reweighted_two_pass": dict(alpha=0.6, chosen_coef=1.2, gamma=0.5),
               "reweighted_single_pass": dict(alpha=0.6, chosen_coef=1.2, gamma=0.5,
                                              single_pass=True)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("path", list(FLOOR_PATHS))
def test_negative_floor_matches_formula_float64(path, bias, backend, chunking):
    """L = mean_pairs[-c lp(y_w)/|y_w| + alpha w lp_tau(y_l)/|y_l|], lp_tau(y_l) =
    sum_{i in y_l} max(lp_i, log tau), on float64 logits (T = 11, V = 45), with a tau amid
    the rejected tokens' probabilities."""
    hidden, weight, b, labels = preference_batch(seed=12, bias=bias, t=11)
    valid = labels != -100
    rejected = valid & (torch.arange(2 * B) >= B)[:, None]
    truth = token_logprobs64(hidden, weight, labels, b).detach()
    log_tau = log_floor_between(truth[rejected])
    under = rejected & (truth < log_tau)
    assert 0 < int(under.sum()) < int(rejected.sum())  # both sides hold rejected tokens
    kw = dict(FLOOR_PATHS[path], tau=math.exp(log_tau))
    loss, metrics = make_loss("redi", backend, **kw)(weight, hidden, labels, b)
    loss.backward()
    x64, w64, b64 = leaf64(hidden), leaf64(weight), leaf64(b)
    logp = token_logprobs64(x64, w64, labels, b64)  # full logits, log_softmax, gather
    seen = torch.where(rejected, logp.clamp(min=log_tau), logp)
    lengths = valid.sum(-1).double()
    ref = pair_formula("redi", seen.sum(-1), lengths, **kw)
    ref.backward()
    plain = pair_formula("redi", logp.detach().sum(-1), lengths, **kw)
    assert abs(plain - ref).item() > 1e-2  # the floor matters
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(grads_of(hidden, weight, b), grads_of(x64, w64, b64)):
        if theirs is not None:
            torch.testing.assert_close(ours.double(), theirs, rtol=1e-4, atol=2e-6)
    assert torch.all(hidden.grad[under] == 0)  # a rejected token under the floor: no gradient
    # the metrics are the model's log-probs, not floored
    torch.testing.assert_close(metrics["rejected_logps"].double(), logp.detach().sum(-1)[B:],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_floor_none_is_the_paper_loss_bit_for_bit(backend):
    """negative_floor=None runs the single pass as it ran before the option existed: loss
    and gradients equal, bit for bit, those of weighted_logprob_sum with REDI's coefficients;
    so does a floor under every token's log-prob (its mask keeps every coefficient)."""
    hidden, weight, b, labels = preference_batch(seed=13, bias=True)
    n = (labels != -100).sum(-1).float()
    row_coef = torch.cat([-1.0 / (float(B) * n[:B]), 0.8 / (float(B) * n[B:])])
    coef = row_coef[:, None].expand(labels.shape)
    inputs = (hidden, weight, b)
    expected = redi.weighted_logprob_sum(hidden, weight, labels, coef, bias=b, backend=backend)
    expected = (expected, *torch.autograd.grad(expected, inputs))
    assert math.log(1e-30) < float(token_logprobs64(hidden, weight, labels, b).detach().min())
    for tau in (None, 1e-30):
        loss, _ = redi.FusedLinearREDILoss(negative_floor=tau, backend=backend)(
            weight, hidden, labels, b)
        for ours, theirs in zip((loss, *torch.autograd.grad(loss, inputs)), expected):
            assert torch.equal(ours, theirs), tau


def naive_bf16(name, hidden, weight, labels, **kw):
    """The unfused loss computed in bf16: full logits, log_softmax, gather, the formula."""
    x, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    logp = torch.log_softmax(x @ w.T, dim=-1)
    valid = labels != -100
    logp = logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1) * valid
    loss = pair_formula(name, logp.sum(-1), valid.sum(-1), **kw)
    loss.backward()
    return loss.detach(), x.grad, w.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["redi", "simpo", "simpo_single_pass"])
def test_bf16_within_bf16_reference_error(backend, case):
    name, kw = case.split("_")[0], CASES[case]
    hidden, weight, _, labels = preference_batch(seed=9, dtype=torch.bfloat16)
    if backend == "triton":  # the interpreter cannot run bf16 dots: feed bf16 values as fp32
        hidden = hidden.detach().float().requires_grad_()
        weight = weight.detach().float().requires_grad_()
    loss, _ = make_loss(name, backend, **kw)(weight, hidden, labels)
    loss.backward()
    x64, w64 = leaf64(hidden), leaf64(weight)
    ref = reference_loss(name, x64, w64, None, labels, **kw)
    ref.backward()
    naive = naive_bf16(name, hidden.bfloat16(), weight.bfloat16(), labels, **kw)
    err = lambda a, r: (a.double() - r).abs().max().item()  # noqa: E731
    assert err(loss, ref.detach()) <= err(naive[0], ref.detach())
    assert err(hidden.grad.bfloat16(), x64.grad) <= err(naive[1], x64.grad)
    assert err(weight.grad.bfloat16(), w64.grad) <= err(naive[2], w64.grad)


def bad_preference_calls():
    hidden, weight, _, labels = preference_batch()
    h, y, seq, cu, chosen, rejected = to_packed(hidden.detach(), labels, list(range(2 * B)))
    empty = labels.clone()
    empty[B + 1] = -100
    redi_fn = redi.FusedLinearREDILoss()
    return {
        "needs an even first dimension": (redi_fn, (weight, hidden[:5], labels[:5]), {}),
        "equally long": (redi_fn, (weight, h, y), dict(seq_index=seq, chosen_index=chosen,
                                                       rejected_index=rejected[:2])),
        r"sequences in \[0, 6\)": (redi_fn, (weight, h, y), dict(
            seq_index=seq, chosen_index=chosen, rejected_index=rejected + 1)),
        "one pair, on one side": (redi_fn, (weight, h, y), dict(
            seq_index=seq, chosen_index=chosen, rejected_index=chosen)),
        "belongs to no pair": (redi_fn, (weight, h, y), dict(
            seq_index=seq, chosen_index=chosen[:2], rejected_index=rejected[:2])),
        r"pair 1: the rejected sequence \(sequence 4\) has no completion": (
            redi_fn, (weight, hidden, empty), {}),
        "cu_seqlens must rise": (redi_fn, (weight, h, y), dict(
            cu_seqlens=cu.flip(0), chosen_index=chosen, rejected_index=rejected)),
        "exactly one of seq_index and cu_seqlens": (redi_fn, (weight, h, y), dict(
            seq_index=seq, cu_seqlens=cu, chosen_index=chosen, rejected_index=rejected)),
        "need chosen_index and rejected_index": (redi_fn, (weight, h, y), dict(
            seq_index=seq)),
        "ref_chosen_logps must be": (redi.FusedLinearDPOLoss(), (weight, hidden, labels), {}),
    }


@pytest.mark.parametrize("match", list(bad_preference_calls()))
def test_bad_input_raises_value_error(match):
    loss_fn, args, kwargs = bad_preference_calls()[match]
    with pytest.raises(ValueError, match=match):
        loss_fn(*args, **kwargs)


@pytest.mark.parametrize("make", [
    lambda: redi.FusedLinearREDILoss(alpha=1.2),
    lambda: redi.FusedLinearREDILoss(alpha=-0.1),
    lambda: redi.FusedLinearREDILoss(chosen_coef=0.0),
    lambda: redi.FusedLinearDPOLoss(beta=0.0),
    lambda: redi.FusedLinearDPOLoss(loss_type="ipo"),
    lambda: redi.FusedLinearSimPOLoss(beta=-1.0),
    lambda: redi.FusedLinearREDILoss(softcap=0.0),
    lambda: redi.FusedLinearDPOLoss(softcap=-30.0),
    lambda: redi.FusedLinearSimPOLoss(temperature=0.0),
    lambda: redi.FusedLinearSFTLoss(softcap=float("nan")),
    lambda: redi.FusedLinearREDILoss(negative_floor=0.0),
    lambda: redi.FusedLinearREDILoss(negative_floor=1.0),
    lambda: redi.FusedLinearREDILoss(negative_floor=float("nan")),
    lambda: redi.FusedLinearREDILoss(negative_floor=True),
], ids=["alpha>1", "alpha<0", "chosen_coef", "dpo_beta", "dpo_loss_type", "simpo_beta",
        "redi_softcap", "dpo_softcap", "simpo_temperature", "sft_softcap", "floor=0",
        "floor=1", "floor=nan", "floor=True"])
def test_bad_hyperparameters_raise_value_error(make):
    with pytest.raises(ValueError, match="^(alpha|chosen_coef|beta|loss_type|softcap|"
                                         "temperature|negative_floor) must be"):
        make()
