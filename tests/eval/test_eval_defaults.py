"""``redi eval`` defaults: the grader (recorded in summary.json), the prompt the model was
trained with for a user's own problems, and new tokens capped at the model's context."""

import json

import pytest
import torch

from redi.cli import main as redi_main
from redi.eval.defaults import cap_new_tokens
from redi.model_dir import TRAINING_PROMPT_FILE, write_training_prompt

CONTEXT = 96


@pytest.fixture(scope="module")
def small_context_model(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from redi.data.tokenizer import load_tokenizer

    directory = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=384, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=CONTEXT)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    load_tokenizer().save_pretrained(directory)
    return directory


def problems_file(path):
    rows = [{"id": "a", "problem": "Compute 1 + 2.", "answer": "3"},
            {"id": "b", "problem": "Compute 20 + 22.", "answer": ["42", "42.0"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(model, data, out, *extra):
    return redi_main(["eval", "--model", str(model), "--data", str(data), "--output", str(out),
                      "--samples", "1", "--no-progress", *extra])


def test_own_problems_get_the_training_prompt_and_the_rllm_grader(small_context_model,
                                                                    tmp_path, capsys):
    data = problems_file(tmp_path / "mine.jsonl")
    assert run(small_context_model, data, tmp_path / "a", "--max-new-tokens", "4") == 0
    settings = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert settings["prompt_style"] == "plain" and settings["think"] is True
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["grader"] == "rllm"
    assert "no training prompt recorded" in capsys.readouterr().err

    model = tmp_path / "model"
    model.mkdir()
    for f in small_context_model.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    write_training_prompt(model, "plain", think=False)
    assert run(model, data, tmp_path / "b", "--max-new-tokens", "4") == 0
    settings = json.loads((tmp_path / "b" / "settings.json").read_text())
    assert settings["prompt_style"] == "plain" and settings["think"] is False
    assert TRAINING_PROMPT_FILE in capsys.readouterr().err


def test_math_benchmarks_keep_the_papers_prompt(small_context_model, tmp_path, capsys):
    data = problems_file(tmp_path / "math500.jsonl")
    # the Open-R1 prompt alone is longer than this model's context: a one-line error
    assert run(small_context_model, data, tmp_path / "out", "--max-new-tokens", "4") == 2
    err = capsys.readouterr().err
    assert "prompt openr1 + <think> (the paper's protocol for math500)" in err
    assert f"the model's context only {CONTEXT}" in err and "Traceback" not in err


def test_grader_flag_and_builtin_default_are_recorded(small_context_model, tmp_path):
    data = problems_file(tmp_path / "test.jsonl")
    assert run(small_context_model, data, tmp_path / "b", "--max-new-tokens", "4",
               "--benchmark", "builtin") == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["grader"] == "exact"
    # the same samples graded again under another grader
    assert run(small_context_model, data, tmp_path / "b", "--max-new-tokens", "4",
               "--benchmark", "builtin", "--grader", "math-verify") == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["grader"] == "math-verify" and summary["options"]["grader"] == "math-verify"


def test_new_tokens_are_capped_at_the_context(small_context_model, tmp_path, capsys):
    data = problems_file(tmp_path / "mine.jsonl")
    assert run(small_context_model, data, tmp_path / "out", "--prompt", "plain") == 0
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())
    allowed = settings["sampling"]["max_new_tokens"]
    assert 0 < allowed < CONTEXT
    err = capsys.readouterr().err
    assert f"does not fit the model's context of {CONTEXT} tokens" in err
    records = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").open()]
    assert len(records) == 2


def test_cap_new_tokens():
    assert cap_new_tokens(100, 200, 50) == (100, None)
    assert cap_new_tokens(100, None, 50) == (100, None)
    assert cap_new_tokens(300, 200, 50)[0] == 150
    with pytest.raises(ValueError, match="longest prompt has 250 tokens"):
        cap_new_tokens(10, 200, 250)


def test_evaluate_without_a_grader_uses_the_benchmarks_default(small_context_model, tmp_path):
    from redi.eval.generation import SamplingSettings
    from redi.eval.runner import EvalOptions, evaluate

    data = problems_file(tmp_path / "test.jsonl")
    options = EvalOptions(samples=1, prompt_style="plain",
                          sampling=SamplingSettings(max_new_tokens=4))
    assert evaluate(str(small_context_model), str(data), str(tmp_path / "b"), "builtin",
                    options, progress=False)["grader"] == "exact"
    assert evaluate(str(small_context_model), str(data), str(tmp_path / "g"), "auto",
                    options, progress=False)["grader"] == "rllm"
