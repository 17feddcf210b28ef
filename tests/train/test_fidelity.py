"""The paper's recipe as the public code runs it: model overrides (long context) carried
into the export and Stage 2, model_config checks, per-loss defaults, no prompt truncation
in Stage 1, and the paper's per-step metrics (update norm checked against the weights)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from redi.data.formatting import Formatter
from redi.data.prepare import PrepareOptions, prepare_builtin_task
from redi.data.tokenizer import load_tokenizer
from redi.train.config import ConfigError, build_config
from redi.train.loader import make_formatter

pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[2]
SMALL = ["global_batch_size=8", "micro_batch_size=4", "max_length=160", "progress=false",
         "dtype=fp32"]


def cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "redi.cli", *map(str, args)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("fidelity")
    prepare_builtin_task(root / "data", Formatter(load_tokenizer()), num_problems=120,
                         num_test=10, options=PrepareOptions(progress=False))
    torch.manual_seed(0)
    for name, positions in (("base", 256), ("short", 64)):
        config = Qwen2Config(vocab_size=384, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=positions, tie_word_embeddings=True)
        Qwen2ForCausalLM(config).save_pretrained(root / name)
        load_tokenizer().save_pretrained(root / name)
    return root


def test_overrides_reach_the_export_and_stage2_and_update_norm_is_the_weight_change(setup):
    out = setup / "sft"
    result = cli("sft", f"data={setup / 'data'}", f"model={setup / 'base'}", f"output_dir={out}",
                 "model_overrides.rope_theta=300000",
                 "model_overrides.max_position_embeddings=512", "max_steps=1", *SMALL)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "effective settings: loss=sft lr=5e-05" in result.stderr
    exported = json.loads((out / "final" / "config.json").read_text())
    assert exported["max_position_embeddings"] == 512
    assert exported["rope_parameters"]["rope_theta"] == 300000
    assert "rope_theta: 300000" in (out / "config.yaml").read_text()
    assert json.loads((out / "final" / "training_prompt.json").read_text()) == {
        "prompt_style": "plain", "think": True}

    stage2 = setup / "redi"
    result = cli("train", f"data={setup / 'data'}", f"init_from={out / 'final'}",
                 f"output_dir={stage2}", "neg_reweight_gamma=1.0", "max_steps=1", "lr=1e-3",
                 *SMALL)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "effective settings: loss=redi lr=0.001 global_batch_size=8" in result.stderr
    inherited = json.loads((stage2 / "final" / "config.json").read_text())
    assert inherited["rope_parameters"]["rope_theta"] == 300000
    (record,) = [json.loads(line) for line in (stage2 / "metrics.jsonl").open()]
    for key in ("chosen_logps", "rejected_logps", "chosen_logps_avg", "rejected_logps_avg",
                "chosen_length", "rejected_length", "neg_weight_mean", "neg_weight_min",
                "neg_weight_max", "update_norm"):
        assert key in record, key
    assert record["neg_weight_min"] <= record["neg_weight_mean"] <= record["neg_weight_max"]
    assert record["chosen_logps"] == pytest.approx(
        record["chosen_logps_avg"] * record["chosen_length"], rel=0.2)
    before = load_file(out / "final" / "model.safetensors")
    after = load_file(stage2 / "final" / "model.safetensors")
    change = sum(((after[k].double() - before[k].double()) ** 2).sum() for k in before) ** 0.5
    assert record["update_norm"] == pytest.approx(float(change), rel=1e-5)


def test_dpo_logs_its_sigmoid_coefficient(setup):
    result = cli("sft", f"data={setup / 'data'}", f"model={setup / 'base'}",
                 f"output_dir={setup / 'sft2'}", "max_steps=1", *SMALL)
    assert result.returncode == 0, result.stderr[-2000:]
    result = cli("train", "loss=dpo", f"data={setup / 'data'}",
                 f"init_from={setup / 'sft2' / 'final'}", f"output_dir={setup / 'dpo'}",
                 "max_steps=1", *SMALL)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lr=2e-07" in result.stderr and "beta=0.001" in result.stderr
    (record,) = [json.loads(line) for line in (setup / "dpo" / "metrics.jsonl").open()]
    # the policy starts as the reference: every margin is 0, sigmoid(-0) = 1/2
    assert record["dpo_sigmoid_coef"] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("args,message", [
    (["model=base", "model_overrides.rope_thetaa=1"], "did you mean 'rope_theta'"),
    (["model=short"], "more than the model's max_position_embeddings 64"),
    (["model_config.vocab_size=100", "model_config.hidden_size=32",
      "model_config.num_attention_heads=4"], "vocab_size 100 is smaller than the tokenizer's"),
])
def test_model_checks_before_training(setup, args, message):
    from redi.train.distributed import Distributed
    from redi.train.loader import TrainData

    args = [a.replace("=base", f"={setup / 'base'}").replace("=short", f"={setup / 'short'}")
            for a in args]
    config = build_config(None, [f"data={setup / 'data'}", f"output_dir={setup / 'x'}",
                                 "loss=sft", *SMALL, *args])
    with pytest.raises(ConfigError, match=message):
        TrainData(config, Distributed(rank=0, world_size=1, device=torch.device("cpu")))


def test_model_errors_are_one_line_on_the_command_line(setup):
    result = cli("sft", f"data={setup / 'data'}", f"output_dir={setup / 'bad'}", "max_steps=1",
                 *SMALL, "model_config.vocab_size=100")
    assert result.returncode == 2
    assert "vocab_size 100 is smaller than the tokenizer's 322 tokens" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="model_config.hidden_sz is not a setting of a qwen2 "
                                          "config .* did you mean 'hidden_size'"):
        build_config(None, ["model_config.hidden_sz=64"])


def test_model_config_cannot_go_with_a_loaded_model():
    for source in ("model=somewhere", "init_from=somewhere"):
        with pytest.raises(ConfigError, match="cannot be combined with"):
            build_config(None, [source, "model_config.hidden_size=32"])
    with pytest.raises(ConfigError, match="model_overrides change a loaded model"):
        build_config(None, ["model_config.hidden_size=32", "model_overrides.rope_theta=1"])


@pytest.mark.parametrize("loss,expected", [
    ("sft", {"lr": 5e-5, "global_batch_size": 128, "epochs": 5.0, "warmup_ratio": 0.1}),
    ("redi", {"lr": 1e-6, "global_batch_size": 32, "epochs": 1.0, "warmup_ratio": 0.1}),
    ("dpo", {"lr": 2e-7, "beta": 0.001, "global_batch_size": 32}),
    ("simpo", {"lr": 5e-7, "beta": 2.0, "gamma": 1.0, "global_batch_size": 32}),
])
def test_each_loss_gets_its_paper_defaults(loss, expected):
    config = build_config(None, [f"loss={loss}", "model=somewhere"])
    assert {k: getattr(config, k) for k in expected} == expected
    assert build_config(None, [f"loss={loss}", "model=somewhere", "lr=0.5"]).lr == 0.5


def test_sft_keeps_long_prompts_whole_and_counts_cut_rows():
    tokenizer = load_tokenizer()
    config = build_config(None, ["loss=sft", "model=x", "max_length=120",
                                 "max_prompt_length=8"])
    formatter = make_formatter(config, tokenizer)
    problem = "Compute " + " + ".join(["12"] * 20) + "."
    trace = "<think>\n" + "add " * 60 + "\n</think>\n\\boxed{240}"
    (example,) = formatter.encode_sft([[{"role": "user", "content": problem},
                                        {"role": "assistant", "content": trace}]])
    text = tokenizer.decode(example["input_ids"])
    assert text.startswith("<|im_start|>user\n" + problem)  # prompt whole, from its head
    assert len(example["input_ids"]) == 120 and formatter.cut_sequences == 1
    # a prompt longer than max_length: cut, and counted as keeping no trained token
    formatter.encode_sft([[{"role": "user", "content": problem * 3},
                           {"role": "assistant", "content": trace}]])
    assert formatter.cut_sequences == 2 and formatter.untrained == 1
    stage2 = make_formatter(build_config(None, ["loss=redi", "model=x"]), tokenizer)
    assert stage2.max_prompt_length == 800  # the pair limit stays in Stage 2
