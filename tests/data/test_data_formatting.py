"""Formatting: exact loss masks on known templates, truncation, prompts for evaluation."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from redi.data.formatting import (
    IGNORE_INDEX,
    OPENR1_MATH_PROMPT,
    Encoded,
    Formatter,
    shift_labels,
    truncate,
    user_content,
)
from redi.data.tokenizer import load_tokenizer

TRACE = "<think>\nunits: 1 + 2 = 3, write 3\n</think>\n\\boxed{3}"
CONVERSATION = [{"role": "user", "content": "Compute 1 + 2."},
                {"role": "assistant", "content": TRACE}]
PROMPT_TOKENS = ["<|im_start|>", "user", "Ċ", "Compute", "Ġ1", "Ġ+", "Ġ2", ".", "<|im_end|>",
                 "Ċ", "<|im_start|>", "assistant", "Ċ"]
TRACE_TOKENS = ["<think>", "Ċ", "units", ":", "Ġ1", "Ġ+", "Ġ2", "Ġ=", "Ġ3", ",", "Ġwrite", "Ġ3",
                "Ċ", "</think>", "Ċ", "\\", "boxed", "{", "3", "}"]


@pytest.fixture(scope="module")
def builtin():
    return load_tokenizer()


def word_tokenizer(chat_template=None):
    """A whitespace word-level tokenizer without a chat template (EOS "<eos>")."""
    words = ["[UNK]", "<eos>", "<pad>", "User:", "Assistant:", "hi", "there", "a", "b", "c", "d"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>",
                                        pad_token="<pad>", unk_token="[UNK]")
    tokenizer.chat_template = chat_template
    return tokenizer


def tokens(tokenizer, ids):
    return [tokenizer.convert_ids_to_tokens(i) if i != IGNORE_INDEX else None for i in ids]


def test_builtin_template_masks_prompt_and_keeps_assistant_tokens_and_eos(builtin):
    example = Formatter(builtin).encode_sft([CONVERSATION])[0]
    assert tokens(builtin, example["input_ids"]) == PROMPT_TOKENS + TRACE_TOKENS + ["<|im_end|>"]
    # labels[t] = input_ids[t + 1] for assistant targets: the last prompt token predicts the
    # first trace token, the last trace token predicts the EOS, the EOS predicts nothing.
    expected = [None] * (len(PROMPT_TOKENS) - 1) + TRACE_TOKENS + ["<|im_end|>", None]
    assert tokens(builtin, example["labels"]) == expected


def test_default_template_for_a_tokenizer_without_one_appends_eos():
    tokenizer = word_tokenizer()
    formatter = Formatter(tokenizer)
    conversation = [{"role": "user", "content": "hi there"},
                    {"role": "assistant", "content": "a b"}]
    assert formatter.render(conversation) == "User:\nhi there\n\nAssistant:\na b<eos>\n\n"
    example = formatter.encode_sft([conversation])[0]
    assert tokens(tokenizer, example["input_ids"]) == ["User:", "hi", "there", "Assistant:",
                                                       "a", "b", "<eos>"]
    assert tokens(tokenizer, example["labels"]) == [None, None, None, "a", "b", "<eos>", None]
    assert formatter.stop_token_ids == [tokenizer.eos_token_id]


def test_turn_without_end_token_gets_the_eos_appended():
    template = ("{%- for m in messages %}{{- m['role'] + ': ' + m['content'] + ' ' }}{%- endfor %}"
                "{%- if add_generation_prompt %}{{- 'assistant: ' }}{%- endif %}")
    tokenizer = word_tokenizer(template)
    example = Formatter(tokenizer).encode_sft(
        [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "c d"}]])[0]
    assert tokens(tokenizer, example["input_ids"])[-3:] == ["c", "d", "<eos>"]
    assert tokens(tokenizer, example["labels"])[-4:] == ["c", "d", "<eos>", None]


def test_every_assistant_turn_is_trained_in_multi_turn_sft(builtin):
    conversation = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    example = Formatter(builtin).encode_sft([conversation])[0]
    assert tokens(builtin, example["input_ids"]) == [
        "<|im_start|>", "user", "Ċ", "a", "<|im_end|>", "Ċ", "<|im_start|>", "assistant", "Ċ",
        "b", "<|im_end|>", "Ċ", "<|im_start|>", "user", "Ċ", "c", "<|im_end|>", "Ċ",
        "<|im_start|>", "assistant", "Ċ", "d", "<|im_end|>"]
    assert builtin.decode(example["input_ids"]) == Formatter(builtin).render(conversation)[:-1]
    trained = [tokens(builtin, [t])[0] for t in example["labels"] if t != IGNORE_INDEX]
    assert trained == ["b", "<|im_end|>", "d", "<|im_end|>"]


def test_pairs_train_only_the_completion_after_the_prompt(builtin):
    prompt = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
              {"role": "user", "content": "c"}]
    chosen, rejected = [{"role": "assistant", "content": "d"}], [{"role": "assistant",
                                                                  "content": "e"}]
    pair = Formatter(builtin).encode_pairs([(prompt, chosen, rejected)])[0]
    assert [tokens(builtin, [t])[0] for t in pair["chosen_labels"] if t != IGNORE_INDEX] == [
        "d", "<|im_end|>"]
    assert [tokens(builtin, [t])[0] for t in pair["rejected_labels"] if t != IGNORE_INDEX] == [
        "e", "<|im_end|>"]
    assert pair["chosen_input_ids"][:-2] == pair["rejected_input_ids"][:-2]


def test_shift_labels():
    assert shift_labels([5, 6, 7, 8], [False, False, True, True]) == [-100, 7, 8, -100]
    assert shift_labels([], []) == []


def test_truncation_keeps_the_end_by_default_and_the_start_when_asked():
    encoded = Encoded(list(range(10)), [False] * 4 + [True] * 6, prompt_length=4)
    assert truncate(encoded, 6) == (list(range(4, 10)), [True] * 6)
    assert truncate(encoded, 6, side="keep_start") == (list(range(6)), [False] * 4 + [True] * 2)
    # the prompt is cut first (to its last 2 tokens: [2, 3]), then the whole (to 7)
    ids, trained = truncate(encoded, 7, max_prompt_length=2)
    assert (ids, trained) == ([3, 4, 5, 6, 7, 8, 9], [False] + [True] * 6)
    ids, trained = truncate(encoded, 7, max_prompt_length=2, side="keep_start")
    assert (ids, trained) == ([0, 1, 4, 5, 6, 7, 8], [False, False] + [True] * 5)
    with pytest.raises(ValueError, match="truncation must be one of"):
        truncate(encoded, 5, side="middle")


def test_truncated_examples_keep_shifted_labels_aligned(builtin):
    full = Formatter(builtin).encode_sft([CONVERSATION])[0]
    end = Formatter(builtin, max_length=10).encode_sft([CONVERSATION])[0]
    assert end["input_ids"] == full["input_ids"][-10:]
    assert end["labels"] == full["labels"][-10:]
    start = Formatter(builtin, max_length=20, truncation="keep_start").encode_sft([CONVERSATION])[0]
    assert start["input_ids"] == full["input_ids"][:20]
    assert start["labels"] == full["labels"][:19] + [IGNORE_INDEX]


def test_generation_prompt_is_the_training_prompt_plus_think(builtin):
    formatter = Formatter(builtin)
    problem = CONVERSATION[0]["content"]
    assert formatter.generation_prompt(problem) == (
        "<|im_start|>user\nCompute 1 + 2.<|im_end|>\n<|im_start|>assistant\n<think>\n")
    training_ids = formatter.encode_sft([CONVERSATION])[0]["input_ids"]
    assert formatter.encode_prompt(problem, think=False) == training_ids[:len(PROMPT_TOKENS)]
    assert formatter.encode_prompt(problem) == training_ids[:len(PROMPT_TOKENS) + 2]
    assert formatter.stop_token_ids == [builtin.convert_tokens_to_ids("<|im_end|>")]


def test_openr1_prompt_style():
    text = user_content("What is 1+1?", "openr1")
    assert text == OPENR1_MATH_PROMPT.replace("{problem}", "What is 1+1?")
    assert text.startswith("Solve the following math problem efficiently and clearly.  The last")
    assert text.endswith("$\\boxed{ANSWER}$. I hope it is correct' (without quotes) where ANSWER "
                         "is just the final number or expression that solves the problem. Think "
                         "step by step before answering.\n\nWhat is 1+1?")
    formatter = Formatter(load_tokenizer(), prompt_style="openr1")
    assert formatter.problem_messages("x") == [{"role": "user", "content": user_content("x",
                                                                                        "openr1")}]
    with pytest.raises(ValueError, match="prompt_style must be one of"):
        user_content("x", "fancy")


def test_a_template_that_drops_thinking_is_refused():
    template = ("{%- for m in messages %}{{- m['role'] + ': ' + m['content'].split('</think>')[-1]"
                " + ' <eos> ' }}{%- endfor %}{%- if add_generation_prompt %}{{- 'assistant: ' }}"
                "{%- endif %}")
    formatter = Formatter(word_tokenizer(template))
    with pytest.raises(ValueError, match="changes assistant messages"):
        formatter.encode_sft([[{"role": "user", "content": "a"},
                               {"role": "assistant", "content": "b </think> c"}]])


def test_template_option_validation():
    with pytest.raises(ValueError, match="has no chat template"):
        Formatter(word_tokenizer(), template="tokenizer")
    with pytest.raises(ValueError, match="template must be one of"):
        Formatter(word_tokenizer(), template="chatml")
