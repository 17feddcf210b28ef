"""The shipped config-only model descriptions (redi.train.model_descriptions): ``redi plan``
answers for the paper's recipes with no weights on disk, ``model_config: NAME`` builds a
random-weight model of that shape, and an unknown name is one line listing the shipped ones."""

import pytest
import torch

from redi.train import model_descriptions
from redi.train.cli import plan_main
from redi.train.config import ConfigError, build_config
from redi.train.model_spec import hf_config
from redi.train.plan import model_facts

RECIPE = "recipes/qwen2.5-math-1.5b_redi.yaml"


@pytest.mark.parametrize("name,billions,vocab", [
    ("qwen2.5-0.5b", 0.494, 151936), ("qwen2.5-math-1.5b", 1.544, 151936),
    ("qwen2.5-math-7b", 7.616, 152064)])
def test_each_description_counts_its_published_size(name, billions, vocab):
    facts = model_facts(build_config(None, [f"model_config={name}"]))
    assert facts.params / 1e9 == pytest.approx(billions, abs=0.001)
    assert facts.vocab == vocab


@pytest.mark.parametrize("extra", [[], ["init_from=/nowhere/qwen2.5-math-1.5b-sft/final"]])
def test_plan_of_the_papers_recipe_reads_no_weights(extra, capsys):
    assert plan_main(["--config", RECIPE, *extra, "--gpu-memory", "80GiB"]) in (0, 1)
    out = capsys.readouterr().out
    assert out.startswith("redi plan: planning from the shipped description of "
                          "qwen2.5-math-1.5b: no weights read\n")
    assert "(H=1536, I=8960, L=28, V=151936)" in out


def test_the_sft_recipes_model_overrides_apply_to_the_description():
    config = build_config("recipes/qwen2.5-math-1.5b_sft.yaml", data="builtin")
    from redi.train.model_spec import described_config

    described = described_config(config)
    assert described.max_position_embeddings == 32768
    assert described.rope_parameters["rope_theta"] == 300000
    assert model_descriptions.load("qwen2.5-math-1.5b")["rope_theta"] == 10000  # stock


@pytest.mark.parametrize("override", ["model_config=qwen3", "model_description=qwen3"])
def test_an_unknown_name_is_one_line_listing_the_shipped_ones(override, capsys):
    assert plan_main([override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no shipped model description 'qwen3'" in err
    assert ", ".join(model_descriptions.NAMES) in err


def test_training_needs_weights_not_only_a_description():
    with pytest.raises(ConfigError, match="no model to train") as err:
        hf_config(build_config(None, ["model_description=qwen2.5-0.5b"]))
    assert "\n" not in str(err.value)


def test_a_random_weight_model_of_the_described_shape_runs():
    from redi.train.modeling import load_causal_lm

    config = build_config(None, ["model_config=qwen2.5-0.5b",
                                 "model_config.num_hidden_layers=1"])
    torch.manual_seed(0)
    lm = load_causal_lm(config)
    assert lm.config.hidden_size == 896 and lm.config.num_hidden_layers == 1
    assert lm.get_input_embeddings().weight.shape == (151936, 896)
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight  # tied
    with torch.no_grad():
        logits = lm(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.shape == (1, 4, 151936) and torch.isfinite(logits).all()
