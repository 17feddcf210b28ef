"""The exported tokenizer under ``AutoTokenizer`` (issue 16, item 7): it must load as the
training tokenizer (same ids), or the export says loudly that it does not."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from redi.data.tokenizer import ROUND_TRIP_PROBE, auto_tokenizer_mismatch, load_tokenizer


def _custom_tokenizer():
    """A word-level tokenizer with its own pre-tokenizer and decoder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator([ROUND_TRIP_PROBE] * 3 + ["Compute 4 + 5. The answer is 9."],
                                trainers.BpeTrainer(vocab_size=120, special_tokens=["[UNK]",
                                                                                    "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="</s>")


def _export(directory, model_type, tokenizer):
    config = AutoConfig.for_model(model_type, vocab_size=384, hidden_size=32,
                                  intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


@pytest.mark.parametrize("which", ["builtin", "custom"])
def test_llama_export_round_trips_through_auto_classes(tmp_path, which):
    tokenizer = load_tokenizer() if which == "builtin" else _custom_tokenizer()
    model = _export(tmp_path, "llama", tokenizer)
    assert auto_tokenizer_mismatch(tokenizer, tmp_path) is None
    auto = AutoTokenizer.from_pretrained(tmp_path)
    ids = tokenizer(ROUND_TRIP_PROBE, return_tensors="pt")["input_ids"]
    assert torch.equal(auto(ROUND_TRIP_PROBE, return_tensors="pt")["input_ids"], ids)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_qwen2_export_says_autotokenizer_builds_another_tokenizer(tmp_path):
    _export(tmp_path, "qwen2", load_tokenizer())
    warning = auto_tokenizer_mismatch(load_tokenizer(), tmp_path)
    assert warning is not None and "builds a Qwen2Tokenizer" in warning
    assert "load_tokenizer" in warning


def test_the_export_warning_is_said_once_per_process(capsys):
    from redi.train.modeling import warn_once

    warn_once("AutoTokenizer.from_pretrained(a) builds a Qwen2Tokenizer", key="test-key")
    warn_once("AutoTokenizer.from_pretrained(b) builds a Qwen2Tokenizer", key="test-key")
    err = capsys.readouterr().err
    assert err.count("redi: warning:") == 1 and "from_pretrained(a)" in err
    warn_once("another kind", key="other-key")
    assert "another kind" in capsys.readouterr().err
