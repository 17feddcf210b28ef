"""``redi plan``: sizes, the model counted on the meta device, the breakdown's arithmetic,
the activation term against autograd's saved tensors of a real forward, suggestions, and
one-line errors. (Peak RSS of real runs vs the plan: bench/plan_validation.py.)"""

import dataclasses

import pytest
import torch

from redi.train.cli import plan_main
from redi.train.config import build_config
from redi.train.plan import (
    GiB,
    MiB,
    PlanError,
    model_facts,
    parse_size,
    plan,
    saved_activation_bytes,
    suggestions,
)

TINY = ["model_config.hidden_size=64", "model_config.intermediate_size=160",
        "model_config.num_hidden_layers=2", "model_config.num_attention_heads=4",
        "model_config.num_key_value_heads=2", "model_config.vocab_size=512",
        "model_config.tie_word_embeddings=true"]


def _config(*extra):
    return build_config(None, [*TINY, "micro_batch_size=2", "global_batch_size=4",
                               "max_length=128", *extra])


def _real_model():
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(_config().model_config)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model("qwen2", **spec),
                                            attn_implementation="sdpa", dtype=torch.float32)


@pytest.mark.parametrize("text,expected", [("80GiB", 80 * GiB), ("40GB", 40 * 10**9),
                                           ("512MiB", 512 * MiB), ("1.5g", int(1.5 * GiB)),
                                           ("1000", 1000), (" 2 TiB ", 2 * 2**40)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["80 gigs", "GiB", "-1GiB", "0GiB", "", "1e3GiB"])
def test_parse_size_rejects_with_one_line(text):
    with pytest.raises(PlanError, match="--gpu-memory: cannot read") as err:
        parse_size(text)
    assert "\n" not in str(err.value)


def test_meta_counts_equal_a_real_model():
    facts = model_facts(_config())
    real = _real_model()
    assert facts.params == sum(p.numel() for p in real.parameters())
    layer = sum(p.numel() for p in real.model.layers[0].parameters())
    assert facts.layer_params == layer
    assert facts.root_params == facts.params - 2 * layer
    assert (facts.hidden, facts.intermediate, facts.layers, facts.vocab) == (64, 160, 2, 512)


@pytest.mark.parametrize("checkpointing,lora", [(False, False), (True, False), (False, True)])
def test_saved_activations_match_autograd(checkpointing, lora):
    """The decoder's saved tensors, counted by storage (parameters excluded), within 5% of
    the plan's term: this breaks if a per-layer tensor is added or dropped. Under LoRA
    (rank 16, all seven projections) the frozen weights save 3H less per token and layer and
    each adapter its rank: the full-model term would be 6% over here, 9% at Qwen2.5-Math-1.5B."""
    from redi.train.lora import apply_lora

    config = _config(*(["lora_r=16"] if lora else []))
    model = apply_lora(_real_model(), config).get_base_model() if lora else _real_model()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, 512, (2, 96))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    facts = model_facts(config)
    assert facts.layer_adapter_ranks == (7 * 16 if lora else 0)
    predicted = saved_activation_bytes(facts, ids.numel(), 4, checkpointing)
    assert sum(storages.values()) == pytest.approx(predicted, rel=0.02 if lora else 0.05)


def test_breakdown_arithmetic():
    config = _config()
    facts = model_facts(config)
    one, four = plan(config, facts, 1, "cpu"), plan(config, facts, 4, "cpu")
    assert one.parts["weights"] == 4 * facts.params
    assert one.parts["gradients"] == 4 * facts.params
    assert one.parts["optimizer (AdamW)"] == 8 * facts.params
    assert four.parts["optimizer (AdamW)"] == 8 * facts.params // 4
    assert one.peak == max(sum(one.parts.values()),  # 2 micro-batches: gradients accumulate
                           one.optimizer_phase)
    # a logged optimizer step: runtime, weights, gradients, moments, update_norm's copy of
    # the largest parameter (no copy of all weights) and the per-tensor AdamW temporaries of
    # the largest parameter (CPU) or of all (CUDA)
    runtime = one.parts["runtime"]
    assert facts.largest_param == facts.vocab * facts.hidden  # the (tied) embedding
    assert one.optimizer_phase == runtime + 16 * facts.params + 12 * facts.largest_param
    assert four.optimizer_phase == runtime + (16 * facts.params + 12 * facts.largest_param) // 4
    cuda = plan(config, facts, 1, "cuda")
    assert cuda.optimizer_phase == (cuda.parts["runtime"] + 20 * facts.params
                                    + 4 * facts.largest_param)
    # one micro-batch per step: the gradients replace the activations, they do not add
    single = plan(_config("global_batch_size=2"), facts, 1, "cpu")
    assert single.peak == sum(single.parts.values()) - min(single.parts["gradients"],
                                                           single.parts["activations"])

    ckpt = plan(_config("activation_checkpointing=true"), facts, 1, "cpu")
    assert ckpt.parts["activations"] < one.parts["activations"]
    offload = plan(_config("cpu_offload=true"), facts, 1, "cpu")
    assert "optimizer (AdamW)" not in offload.parts
    assert offload.host_parts["optimizer (AdamW)"] == 8 * facts.params
    assert offload.optimizer_phase == offload.parts["runtime"]  # the step runs on the host
    vh = 4 * facts.vocab * facts.hidden
    single_pass = plan(_config("loss_single_pass=true"), facts, 1, "cpu")
    assert single_pass.parts["fused loss"] - one.parts["fused loss"] == 2 * vh
    # the logits block: 4 n V bytes up to its cap (64 MiB CPU, 512 MiB Triton); bf16 on GPU
    # adds fp32 copies of the hidden states and the head
    tokens = 2 * 2 * 128  # 2 pairs of max_length 128
    assert one.parts["fused loss"] == 4 * tokens * (facts.hidden + facts.vocab) + vh
    n = 4 * 65536  # 2 pairs of 65536 tokens: both blocks at their caps
    cpu_long, gpu_long = (plan(_config("max_length=65536"), facts, 1, device)
                          for device in ("cpu", "cuda"))
    assert gpu_long.parts["fused loss"] - cpu_long.parts["fused loss"] == (
        448 * MiB + 4 * n * facts.hidden + vh)
    online = plan(_config("loss=dpo", "reference=online"), facts, 2, "cpu")
    assert online.parts["reference (online)"] == 4 * facts.params // 2
    cached = plan(_config("loss=dpo"), facts, 1, "cpu")
    assert cached.reference_phase is not None and "reference (online)" not in cached.parts
    # padded rows without flash-attn get a boolean [T, T] mask each, packed rows no mask
    packed = plan(_config("packing=true"), facts, 1, "cpu")
    assert one.parts["activations"] - packed.parts["activations"] == 4 * 128 ** 2


def test_lora_trains_only_the_adapters():
    """With lora_r, gradients and AdamW moments are the adapters' (counted as PEFT adds them
    to the real model), not all weights', and update_norm / AdamW's temporaries are one
    adapter's."""
    from redi.train.lora import apply_lora

    config = _config("lora_r=4")
    facts, full = model_facts(config), model_facts(_config())
    adapters = [p.numel() for p in apply_lora(_real_model(), config).parameters()
                if p.requires_grad]
    assert facts.adapter_params == sum(adapters) and facts.largest_adapter == max(adapters)
    assert facts.params == full.params and full.adapter_params == 0
    lora = plan(config, facts, 1, "cpu")
    assert lora.parts["weights"] == 4 * (facts.params + sum(adapters))
    assert lora.parts["gradients"] == 4 * sum(adapters)
    assert lora.parts["optimizer (AdamW)"] == 8 * sum(adapters)
    assert lora.optimizer_phase == (lora.parts["runtime"] + 4 * facts.params
                                    + 16 * sum(adapters) + 12 * max(adapters))
    assert lora.peak < plan(_config(), full, 1, "cpu").peak
    # the head is frozen: the fused loss keeps no [V, H] dW accumulator (one pass or three)
    tokens = 2 * 2 * 128
    for extra in ((), ("loss_single_pass=true",)):
        frozen = plan(_config("lora_r=4", *extra), facts, 1, "cpu")
        assert frozen.parts["fused loss"] == 4 * tokens * (facts.hidden + facts.vocab)


def test_suggestions_stop_at_the_first_that_fits():
    config = _config("micro_batch_size=8", "global_batch_size=8", "max_length=2048")
    facts = model_facts(config)
    full = plan(config, facts, 1, "cpu").peak
    ckpt = plan(dataclasses.replace(config, activation_checkpointing=True), facts, 1, "cpu")
    tried = suggestions(config, facts, 1, "cpu", budget=ckpt.peak)
    assert tried == [("activation_checkpointing=true", ckpt.peak)] and ckpt.peak < full
    tried = suggestions(config, facts, 1, "cpu", budget=1)  # nothing fits: all tried, falling
    assert [t for t, _ in tried][:4] == ["activation_checkpointing=true", "micro_batch_size=4",
                                         "micro_batch_size=2", "micro_batch_size=1"]
    assert tried[-1][0].startswith("lora_r=")
    peaks = [p for _, p in tried]
    assert peaks == sorted(peaks, reverse=True)


def test_cli_prints_breakdown_and_verdict(capsys):
    assert plan_main([*TINY, "--gpu-memory", "80GiB"]) == 0
    out = capsys.readouterr().out
    assert "weights" in out and "activations" in out and "fits in 80.00 GiB" in out
    assert plan_main([*TINY, "max_length=4096", "micro_batch_size=8", "--gpu-memory",
                      "1.2GiB"]) == 1
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "activation_checkpointing=true" in out


@pytest.mark.parametrize("argv,message", [
    ([*TINY, "--gpu-memory", "80 gigs"], "--gpu-memory: cannot read '80 gigs'"),
    ([*TINY, "lora_rank=8"], "unknown config key 'lora_rank'"),
    ([*TINY, "--nproc", "0"], "--nproc must be >= 1"),
    (["init_from=/nonexistent"], "/nonexistent is not a Hugging Face model directory"),
    ([*TINY, "lora_r=4", "lora_target_modules=[qq_proj]"],
     "lora_target_modules: 'qq_proj' matches no module"),
])
def test_cli_bad_input_is_one_line(argv, message, capsys):
    assert plan_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("redi plan: ") and message in err and err.count("\n") == 1
