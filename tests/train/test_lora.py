"""LoRA through PEFT in the trainer (redi.train.lora): config errors, the merged export
against PEFT's merge_and_unload, and runs under FSDP2 with two processes (gloo): only the
adapters train and are checkpointed, resume, DPO's reference is the model with its adapters
off, export merged or adapter-only."""

import copy
import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import COMMON, TINY_MODEL, data_dir, metrics, run_cli  # noqa: F401
from transformers import Qwen2Config, Qwen2ForCausalLM

from redi.train import lora
from redi.train.config import ConfigError, build_config

peft = pytest.importorskip("peft")


def tiny_lm():
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=40, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=1))


@pytest.mark.parametrize("override,message", [
    ("lora_r=0", "lora_r must be >= 1"),
    ("lora_r=-2", "lora_r must be >= 1"),
    ("lora_alpha=0", "lora_alpha must be > 0"),
    ("lora_dropout=1.0", "lora_dropout must be in"),
    ("lora_target_modules=[]", "lora_target_modules must be"),
])
def test_bad_lora_keys_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_config(None, [*TINY_MODEL, "lora_r=4", override])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("targets,message", [
    (["q_proj", "nonexistent_proj"], "'nonexistent_proj' matches no module"),
    (["q_proj", "lm_head"], "adapter on the LM head"),
])
def test_targets_that_match_nothing_or_the_head_are_refused(targets, message):
    config = build_config(None, [*TINY_MODEL, "lora_r=4", f"lora_target_modules={targets}"])
    with pytest.raises(ValueError, match=message):
        lora.apply_lora(tiny_lm(), config)


def test_merged_state_equals_peft_merge_and_unload():
    config = build_config(None, [*TINY_MODEL, "lora_r=4", "lora_alpha=12"])
    model = lora.apply_lora(tiny_lm(), config)
    with torch.no_grad():  # B starts at zero: make the adapters count
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    assert [n for n, p in model.named_parameters() if p.requires_grad] and all(
        "lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    merged = lora.merged_state(dict(model.state_dict()), model)
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    assert merged.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(merged[key], expected[key], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(merged["model.layers.0.self_attn.q_proj.weight"],
                              tiny_lm().state_dict()["model.layers.0.self_attn.q_proj.weight"])


def train(data_dir, out, *extra, nproc=2):  # noqa: F811 (the fixture's name, a parameter)
    result = run_cli(["train", f"data={data_dir}", f"output_dir={out}", "lr=1e-2", "lora_r=4",
                      "lora_target_modules=[q_proj,v_proj,down_proj]", *TINY_MODEL,
                      *COMMON, *extra], nproc=nproc)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_lora_redi_under_fsdp2_trains_checkpoints_and_resumes_adapters_only(
        data_dir, tmp_path):  # noqa: F811
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train(data_dir, full, "loss=redi", "max_steps=3", "save_every=2", "keep_last=5")
    meta = json.loads((full / "checkpoints" / "step_00000002" / "trainer.json").read_text())
    assert meta["parameter_shapes"] and all("lora_" in k for k in meta["parameter_shapes"])
    shutil.copytree(full / "checkpoints" / "step_00000002",
                    resumed / "checkpoints" / "step_00000002")
    shutil.copy(full / "config.yaml", resumed / "config.yaml")
    result = train(data_dir, resumed, "loss=redi", "max_steps=3", "save_every=2")
    assert "resumed from" in result.stderr + result.stdout
    assert metrics(resumed)[3]["loss"] == metrics(full)[3]["loss"]
    # the merged export: untargeted weights are the (seeded) initial ones, targeted moved
    torch.manual_seed(42)  # the run's seed: the same from-config initialization
    config = build_config(None, TINY_MODEL)
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(config.model_config)
    initial = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(spec.pop("model_type"), **spec), dtype=torch.float32).state_dict()
    exported = load_file(full / "final" / "model.safetensors")
    assert not any("lora_" in k or "base_layer" in k for k in exported)
    for key in ("model.layers.0.mlp.gate_proj.weight", "model.embed_tokens.weight"):
        assert torch.equal(exported[key], initial[key]), key
    assert not torch.equal(exported["model.layers.0.self_attn.q_proj.weight"],
                           initial["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.slow
def test_lora_dpo_reference_is_the_model_with_adapters_off_and_adapter_export(
        data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "dpo"
    train(data_dir, out, "loss=dpo", "reference=online", "max_steps=2", "beta=1.0",
          "export_adapter=true", nproc=1)
    losses = metrics(out)
    # adapters start at B = 0: the policy is the reference; after one step it is not
    assert losses[1]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert abs(losses[2]["loss"] - math.log(2)) > 1e-4
    final = out / "final"
    assert (final / "adapter_config.json").is_file()
    adapter = load_file(final / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert (final / "tokenizer.json").is_file() and not (final / "model.safetensors").exists()
