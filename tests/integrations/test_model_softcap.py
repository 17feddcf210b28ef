"""A model's final-logit softcap reaches every loss the trainer runs.

A tiny Gemma 2 (``final_logit_softcapping``) built from a config: the trainer's forward with
each fused loss and DPO's reference log-probs must equal the same quantities computed from
the model's own (soft-capped) logits, in float64; a loss that would ignore the cap, or use
another one, is an error.
"""


import pytest
import torch
from transformers import AutoModelForCausalLM, CohereConfig, Gemma2Config, Qwen2Config

import redi
from redi import functional
from redi.integrations.transformers import model_softcap, with_model_softcap
from redi.pair_logprob_sums import pair_logprobs
from redi.train.modeling import CausalLMWithFusedLoss

CAP = 2.0  # small, so that the cap changes the log-probs of a random tiny model a lot
V = 64


def tiny(config_cls, **kw):
    torch.manual_seed(0)
    config = config_cls(vocab_size=V, hidden_size=16, intermediate_size=32,
                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                        head_dim=8, **kw)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                            dtype=torch.float64)


def gemma2(cap=CAP):
    return tiny(Gemma2Config, final_logit_softcapping=cap, initializer_range=0.5)


def pair_batch(seed=0, b=2, t=7):
    """Padded [2B, T] batch, chosen rows first, labels shifted, prompt and padding -100."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, V, (2 * b, t), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -2:] = 0
    labels = torch.full_like(input_ids, -100)
    labels[:, 2:-1] = input_ids[:, 3:]
    labels[1, -3:] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def model_logps(lm, batch):
    """Per-row summed log-probs from the model's own forward (its capped logits)."""
    logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    valid = batch["labels"] != -100
    logp = torch.log_softmax(logits, -1).gather(-1, batch["labels"].clamp(min=0)[..., None])
    return (logp.squeeze(-1) * valid).sum(-1), valid.sum(-1).double()


LOSSES = {
    "sft": (lambda: redi.FusedLinearSFTLoss(),
            lambda lp, n: functional.sft_loss(lp, n)[0]),
    "redi": (lambda: redi.FusedLinearREDILoss(),
             lambda lp, n: functional.redi_loss(lp[:2], lp[2:], n[:2], n[2:])[0]),
    "simpo_single_pass": (
        lambda: redi.FusedLinearSimPOLoss(single_pass=True),
        lambda lp, n: functional.simpo_loss(lp[:2], lp[2:], n[:2], n[2:])[0]),
    "dpo": (lambda: redi.FusedLinearDPOLoss(beta=0.5),
            lambda lp, n: functional.dpo_loss(lp[:2], lp[2:], torch.tensor([-9.0, -8.0]),
                                              torch.tensor([-7.0, -9.5]), beta=0.5)[0]),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_trainer_forward_trains_the_models_capped_logits(name):
    make_loss, formula = LOSSES[name]
    lm = gemma2()
    model = CausalLMWithFusedLoss(lm)
    batch = pair_batch()
    kwargs = {}
    if name == "dpo":
        kwargs = dict(ref_chosen_logps=torch.tensor([-9.0, -8.0]),
                      ref_rejected_logps=torch.tensor([-7.0, -9.5]))
    loss_fn = make_loss()
    loss, _ = model(batch, loss_fn, **kwargs)
    assert loss_fn.softcap == CAP  # read from the config
    ours = torch.autograd.grad(loss, list(lm.parameters()))
    ref = formula(*model_logps(lm, batch))
    theirs = torch.autograd.grad(ref, list(lm.parameters()))
    # float64 model; the losses' per-token coefficients are float32 (1e-7 relative)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-9)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    uncapped = formula(*model_logps(gemma2(cap=None), batch))
    assert abs(float((uncapped - ref).detach())) > 1e-2  # the cap matters here


def test_dpo_reference_logps_use_the_cap():
    """The online reference runs ``pair_logprobs`` through the same forward."""
    lm = gemma2()
    batch = pair_batch(seed=1)
    with torch.no_grad():
        chosen, rejected = CausalLMWithFusedLoss(lm)(batch, pair_logprobs)
        lp, _ = model_logps(lm, batch)
    torch.testing.assert_close(torch.cat([chosen, rejected]), lp, rtol=1e-10, atol=1e-10)


def test_a_loss_with_another_softcap_is_refused():
    model = CausalLMWithFusedLoss(gemma2())
    with pytest.raises(ValueError, match="softcap=5.0 but the model's final_logit_softcapping "
                                         "is 2.0"):
        model(pair_batch(), redi.FusedLinearREDILoss(softcap=5.0))
    plain = CausalLMWithFusedLoss(tiny(Qwen2Config))
    with pytest.raises(ValueError, match="softcap=5.0 but the model's final_logit_softcapping "
                                         "is None"):
        plain(pair_batch(), redi.FusedLinearREDILoss(softcap=5.0))


def test_a_loss_function_without_softcap_is_refused():
    def uncapped_sums(weight, hidden, labels, bias=None):
        return redi.token_logprobs(hidden, weight, labels, bias=bias).sum()

    with pytest.raises(ValueError, match="final_logit_softcapping=2.0.*uncapped_sums takes "
                                         "no softcap"):
        CausalLMWithFusedLoss(gemma2())(pair_batch(), uncapped_sums)
    assert CausalLMWithFusedLoss(tiny(Qwen2Config))(pair_batch(), uncapped_sums).isfinite()


def test_model_softcap_reads_configs():
    assert model_softcap(Gemma2Config(final_logit_softcapping=30.0)) == 30.0
    assert model_softcap(Gemma2Config(final_logit_softcapping=None)) is None
    assert model_softcap(Qwen2Config()) is None
    with pytest.raises(ValueError, match="sets logit_scale=0.0625"):
        model_softcap(CohereConfig(logit_scale=0.0625))
    with pytest.raises(ValueError, match="softcap must be"):
        with_model_softcap(redi.FusedLinearSFTLoss(), -1.0)
