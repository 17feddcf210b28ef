"""redi.integrations.transformers.head_inputs: the fused loss's (hidden, weight, bias)
through the model's own forward."""

import copy

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from redi.integrations.transformers import HeadError, head_inputs

V = 40


def tiny(tied=False, **extra):
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=V, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=1, tie_word_embeddings=tied,
                                        **extra))


def ids():
    return torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("tied", [False, True])
def test_hidden_times_weight_are_the_models_logits_and_grads_reach_the_head(tied):
    model = tiny(tied)
    hidden, weight, bias = head_inputs(model, input_ids=ids())
    assert weight is model.lm_head.weight and bias is None
    assert (weight is model.model.embed_tokens.weight) == tied
    torch.testing.assert_close(hidden @ weight.T, model(input_ids=ids()).logits)
    (hidden @ weight.T).logsumexp(-1).sum().backward()
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_peft_lora_model_runs_its_adapters_and_modules_to_save_head():
    peft = pytest.importorskip("peft")
    model = tiny()
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                             modules_to_save=["lm_head"], init_lora_weights=False)
    wrapped = peft.get_peft_model(model, config)
    with torch.no_grad():  # the trained head copy differs from the original
        wrapped.base_model.model.lm_head.modules_to_save["default"].weight.mul_(2)
    hidden, weight, _ = head_inputs(wrapped, input_ids=ids())
    assert weight is wrapped.base_model.model.lm_head.modules_to_save["default"].weight
    torch.testing.assert_close(hidden @ weight.T, wrapped(input_ids=ids()).logits)
    with wrapped.disable_adapter():  # adapters off: the original head and no LoRA
        hidden_off, weight_off, _ = head_inputs(wrapped, input_ids=ids())
    assert weight_off is wrapped.base_model.model.lm_head.original_module.weight
    assert not torch.allclose(hidden_off, hidden)


def test_lora_on_the_head_is_refused():
    peft = pytest.importorskip("peft")
    wrapped = peft.get_peft_model(tiny(), peft.LoraConfig(r=2, target_modules=["lm_head"]))
    with pytest.raises(HeadError, match="adapter sits on the LM head"):
        head_inputs(wrapped, input_ids=ids())


def test_a_softcapped_model_is_refused_unless_the_caller_takes_the_cap():
    model = tiny()
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(HeadError, match="final_logit_softcapping=30.0"):
        head_inputs(model, input_ids=ids())
    hidden, _, _ = head_inputs(model, allow_softcap=True, input_ids=ids())
    assert hidden.shape == (2, 5, 16)


def test_a_hidden_state_that_is_not_the_heads_input_is_refused():
    model = tiny()
    broken = copy.deepcopy(model)
    broken.lm_head.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    with pytest.raises(HeadError, match="not the LM head's input"):
        head_inputs(broken, input_ids=ids())
