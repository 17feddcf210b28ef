"""``redi prepare`` as the paper's public code: responses counted through the chat template
(system block included) plus one, and the source and validity filters applied before row
validation (a malformed row of a dropped source is counted under its filter)."""

import json

from redi.data.formatting import Formatter
from redi.data.prepare import PrepareOptions, prepare, response_count_extra
from redi.data.tokenizer import CHATML_TEMPLATE, load_tokenizer

SYSTEM_TEMPLATE = ("{%- if messages[0]['role'] != 'system' %}"
                   "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
                   "{%- endif %}" + CHATML_TEMPLATE)


def row(problem, generations, verdicts, **extra):
    return {"problem": problem, "generations": generations,
            "correctness": {"llama_verification": verdicts,
                            "math_verify_reparsed_answer": verdicts},
            "problem_is_valid": "Yes", "source": "olympiads", **extra}


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_filters_come_before_validation(tmp_path):
    rows = [row("p1", ["a", "b"], [True, False]),
            {"source": "cn_k12", "problem": 5, "generations": "not a list"},
            {"problem_is_valid": "No", "problem": "p", "generations": None, "source": "x"},
            row("p4", ["c", "d"], [True, False])]
    stats = prepare(write(tmp_path / "raw.jsonl", rows), tmp_path / "out",
                    Formatter(load_tokenizer()), PrepareOptions(progress=False))
    assert stats["filtered"] == {"dropped_source": 1, "problem_not_valid": 1}
    assert stats["rows"] == {"read": 4, "invalid": 0, "filtered": 2, "kept": 2}


def test_response_length_counts_the_template_and_one_more(tmp_path):
    tokenizer = load_tokenizer()
    tokenizer.chat_template = SYSTEM_TEMPLATE
    formatter = Formatter(tokenizer)
    extra = response_count_extra(formatter)
    system = tokenizer("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
                       add_special_tokens=False)["input_ids"]
    # system block + "<|im_start|>assistant\n" + "<|im_end|>\n" + 1, less the trained end
    assert extra == len(system) + 3 + 2 + 1 - 1
    response = "<think>\n" + "7 + 8 = 15\n" * 4 + "</think>\n\\boxed{15}"
    (encoded,) = formatter.encode_conversations(
        [([{"role": "user", "content": "q"}, {"role": "assistant", "content": response}], 1)])
    trained = encoded.completion_length  # content + end-of-turn
    wrong = response.replace("\\boxed{15}", "\\boxed{16}")  # as long, not identical
    assert wrong != response and len(tokenizer(wrong)["input_ids"]) == len(
        tokenizer(response)["input_ids"])
    rows = [row("q", [response, wrong], [True, False])]
    source = write(tmp_path / "raw.jsonl", rows)
    for limit, written in ((trained, 0), (trained + extra - 1, 0), (trained + extra, 1)):
        stats = prepare(source, tmp_path / f"out{limit}", formatter,
                        PrepareOptions(max_response_tokens=limit, progress=False))
        assert stats["pairs"]["written"] == written, limit
    assert stats["response_count_extra"] == extra
