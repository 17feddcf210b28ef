"""The built-in task (generator, mistakes, held-out split, checker) and tokenizer."""

import gzip
import json
import random

import pytest
from transformers import AutoTokenizer

from redi.data.builtin_task import (
    MISTAKES,
    OTHER_STYLE,
    Mistake,
    check_answer,
    generate_rows,
    generate_test,
    generate_test_pairs,
    possible_mistakes,
    render_trace,
    sample_operands,
    solve,
    split_of,
    teacher_rows,
    teacher_rows_path,
    trace_style,
    verify,
    write_task,
)
from redi.data.formatting import Formatter
from redi.data.tokenized import load_pairs
from redi.data.tokenizer import (
    BUILTIN_TOKENIZER_DIR,
    CHATML_TEMPLATE,
    build_builtin_tokenizer,
    load_tokenizer,
)
from redi.grading.answers import extract_boxed
from redi.grading.answers import whole_number as normalize_answer

CORRECT_358_274 = ("<think>\n"
                   "units: 8 + 4 = 12, write 2, carry 1\n"
                   "tens: 5 + 7 + 1 = 13, write 3, carry 1\n"
                   "hundreds: 3 + 2 + 1 = 6, write 6\n"
                   "</think>\n\\boxed{632}")


def test_correct_trace_exact():
    assert render_trace(solve((358, 274))) == CORRECT_358_274
    assert render_trace(solve((99, 8, 5))) == ("<think>\nunits: 9 + 8 + 5 = 22, write 2, carry 2\n"
                                               "tens: 9 + 2 = 11, write 11\n</think>\n\\boxed{112}")


@pytest.mark.parametrize("mistake, lines, answer", [
    (Mistake("slip", 0, 1), ["units: 8 + 4 = 13, write 3, carry 1"], "633"),
    (Mistake("dropped_term", 1, 1), ["tens: 5 + 1 = 6, write 6", "hundreds: 3 + 2 = 5, write 5"],
     "562"),
    (Mistake("forgot_carry", 1), ["tens: 5 + 7 = 12, write 2, carry 1"], "622"),
    (Mistake("dropped_carry", 0), ["units: 8 + 4 = 12, write 2", "tens: 5 + 7 = 12, write 2, "
                                   "carry 1"], "622"),
])
def test_each_mistake_differs_from_the_correct_trace_in_a_few_steps(mistake, lines, answer):
    wrong = render_trace(solve((358, 274), mistake))
    changed = [b for a, b in zip(CORRECT_358_274.splitlines(), wrong.splitlines(),
                                 strict=True) if a != b]
    assert changed == lines + [f"\\boxed{{{answer}}}"]
    assert not check_answer(wrong, "632")


def test_every_possible_mistake_changes_the_answer():
    rng = random.Random(0)
    kinds = set()
    for _ in range(300):
        operands = sample_operands(rng)
        for mistake in possible_mistakes(operands):
            kinds.add(mistake.kind)
            wrong = render_trace(solve(operands, mistake))
            assert not check_answer(wrong, str(sum(operands))), (operands, mistake)
    assert kinds == set(MISTAKES)


def test_rows_follow_the_openr1_schema_and_are_deterministic():
    rows = list(generate_rows(300, seed=7))
    assert rows == list(generate_rows(300, seed=7))
    assert rows != list(generate_rows(300, seed=8))
    for row in rows:
        assert set(row) == {"problem", "answer", "generations", "correctness",
                            "problem_is_valid", "source", "uuid", "styles"}
        verdicts = [check_answer(g, row["answer"]) for g in row["generations"]]
        assert row["correctness"] == {"llama_verification": verdicts,
                                      "math_verify_answer": verdicts,
                                      "math_verify_reparsed_answer": verdicts}
        assert len(row["generations"]) == 4 and row["problem_is_valid"] == "Yes"
        operands = tuple(int(n) for n in row["problem"][len("Compute "):-1].split(" + "))
        assert str(sum(operands)) == row["answer"] and split_of(operands) == "train"
    share = sum(sum(r["correctness"]["llama_verification"]) for r in rows) / (4 * len(rows))
    assert 0.45 < share < 0.75  # column_error 0.2 over 1 to 3 columns
    assert len({r["uuid"] for r in rows}) == 300


def test_held_out_splits_are_disjoint_distinct_and_answered():
    test = generate_test(200, seed=0)
    validation = generate_test(200, seed=0, split="validation")
    assert test == generate_test(200, seed=0)
    assert [t["id"] for t in test] == [f"builtin-test-{i:05d}" for i in range(200)]
    assert [t["id"] for t in validation] == [f"builtin-validation-{i:05d}" for i in range(200)]
    assert len({t["problem"] for t in test}) == len({t["problem"] for t in validation}) == 200
    train = {r["problem"] for r in generate_rows(3000, seed=0)}
    held_out = [{t["problem"] for t in split} for split in (test, validation)]
    assert not train & held_out[0] and not train & held_out[1] and not held_out[0] & held_out[1]
    for t in test + validation:
        operands = [int(n) for n in t["problem"][len("Compute "):-1].split(" + ")]
        assert t["answer"] == str(sum(operands))
    with pytest.raises(ValueError, match="split must be one of"):
        generate_test(2, split="train")


def test_held_out_pairs_rank_the_correct_trace_against_one_mistake():
    pairs, test = generate_test_pairs(50, seed=3), generate_test(50, seed=3)
    assert [p["id"] for p in pairs] == [t["id"] for t in test]
    for pair, problem in zip(pairs, test, strict=True):
        assert pair["prompt"] == [{"role": "user", "content": problem["problem"]}]
        assert check_answer(pair["chosen"][0]["content"], problem["answer"])
        assert not check_answer(pair["rejected"][0]["content"], problem["answer"])
        assert pair["mistake"] in MISTAKES
    assert pairs == generate_test_pairs(50, seed=3)


def test_impossible_sizes_are_errors():
    with pytest.raises(ValueError, match="cannot find 50 distinct test problems"):
        generate_test(50, max_operands=2, max_digits=1)
    with pytest.raises(ValueError, match="max_operands >= 2 and 1 <= max_digits <= 4"):
        next(generate_rows(1, max_digits=5))


def test_write_task(tmp_path):
    paths = write_task(tmp_path, num_problems=5, num_test=3, seed=2, task="slips",
                       num_validation=4, max_digits=2)
    assert paths == {name: tmp_path / f"{name}.jsonl"
                     for name in ("raw", "test", "validation", "test_pairs")}
    read = lambda name: [json.loads(line) for line in paths[name].read_text().splitlines()]
    assert read("raw") == list(generate_rows(5, seed=2, max_digits=2))
    assert read("test") == generate_test(3, seed=2, max_digits=2)
    assert read("validation") == generate_test(4, seed=2, max_digits=2, split="validation")
    assert read("test_pairs") == generate_test_pairs(3, seed=2, max_digits=2)
    formatter = Formatter(load_tokenizer())
    assert len(load_pairs(paths["test_pairs"], formatter)) == 3


def test_terse_style_writes_only_what_each_column_puts_down():
    assert render_trace(solve((358, 274)), "terse") == (
        "<think>\nunits: write 2, carry 1\ntens: write 3, carry 1\nhundreds: write 6\n"
        "</think>\n\\boxed{632}")
    with pytest.raises(ValueError, match="unknown trace style 'short'"):
        render_trace(solve((1, 2)), "short")


@pytest.mark.parametrize("text, style", [
    (CORRECT_358_274, "verbose"),
    (render_trace(solve((358, 274), Mistake("slip", 0, 1)), "terse"), "terse"),
    ("<think>\nunits: 8 + 4 = 12, write 2\ntens: write 1\n</think>", "verbose"),  # 1st line
    ("<think>\nunits: 12, write 2\n</think>\n\\boxed{2}", OTHER_STYLE),
    ("\\boxed{632}", OTHER_STYLE),
])
def test_trace_style_reads_the_first_column_line(text, style):
    assert trace_style(text) == style


def test_terse_share_sets_the_rule_traces_mix_and_leaves_verbose_streams_alone():
    rows = list(generate_rows(400, seed=3, column_error=0.0, generations=1, terse_share=0.3))
    styles = [r["styles"][0] for r in rows]
    assert styles == [trace_style(r["generations"][0]) for r in rows]
    assert 0.2 < styles.count("terse") / len(styles) < 0.4
    assert all(r["correctness"]["math_verify_answer"] == [True] for r in rows)
    plain = list(generate_rows(50, seed=7))
    assert [r["generations"] for r in plain] == [
        r["generations"] for r in generate_rows(50, seed=7, terse_share=0.0)]
    assert {s for r in plain for s in r["styles"]} == {"verbose"}


def test_styles_rows_without_a_style_are_refused_naming_the_row(tmp_path):
    rows = [json.loads(line) for line in gzip.open(teacher_rows_path("addition"), "rt")][:3]
    rows[0]["styles"] = ["verbose"] * len(rows[0]["generations"])
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    assert len(teacher_rows(3, "addition", path)) == 3
    with pytest.raises(ValueError, match=r"rows.jsonl.gz row 2: field 'styles' must list"):
        teacher_rows(3, "styles", path)


def test_teacher_task_reads_the_shipped_teacher_samples(tmp_path):
    rows = teacher_rows(50, "addition")
    assert rows == teacher_rows(60, "addition")[:50]
    for row in rows:
        verdicts = [verify(g, row["answer"]) for g in row["generations"]]
        assert row["correctness"]["math_verify_answer"] == verdicts
        operands = tuple(int(n) for n in row["problem"][len("Compute "):-1].split(" + "))
        assert split_of(operands) == "train" and str(sum(operands)) == row["answer"]
    flat = [v for r in teacher_rows(400, "addition")
            for v in r["correctness"]["math_verify_answer"]]
    assert 0.2 < 1 - sum(flat) / len(flat) < 0.8  # a useful mix of right and wrong samples
    paths = write_task(tmp_path, num_problems=50, num_test=3, task="addition")
    assert [json.loads(line) for line in paths["raw"].open()] == rows
    with pytest.raises(ValueError, match="fewer than the 10000000 asked for"):
        teacher_rows(10_000_000, "addition")
    with pytest.raises(ValueError, match="unknown built-in task 'nope'; choose one of"):
        write_task(tmp_path, 5, 3, task="nope")


def test_answer_extraction_and_normalization():
    assert extract_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert extract_boxed("no answer") is None
    assert extract_boxed("\\boxed{12") is None
    assert [normalize_answer(s) for s in ("0632", " $1,234$ ", "12.", "-7", "1\\,000", "1.5",
                                          "x")] == ["632", "1234", "12", "-7", "1000", None, None]
    assert check_answer("so \\boxed{ 0632 }", "632")
    assert not check_answer("so \\boxed{631}", "632")
    assert not check_answer("632", "632")


def test_builtin_tokenizer_asset():
    tokenizer = AutoTokenizer.from_pretrained(str(BUILTIN_TOKENIZER_DIR))
    assert len(tokenizer) == 322
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert tokenizer.chat_template == CHATML_TEMPLATE
    assert tokenizer.tokenize("<think>\n 12</think>") == ["<think>", "Ċ", "Ġ1", "2", "</think>"]
    text = "any text: ünïcödé 🙂 \\frac{1}{2}"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    lengths = [len(Formatter(tokenizer).encode_sft([[
        {"role": "user", "content": r["problem"]},
        {"role": "assistant", "content": r["generations"][0]}]])[0]["input_ids"])
        for r in generate_rows(200, seed=0)]
    assert max(lengths) <= 100


def test_builtin_tokenizer_asset_is_reproducible_and_survives_a_save(tmp_path):
    stored = AutoTokenizer.from_pretrained(str(BUILTIN_TOKENIZER_DIR))
    rebuilt = build_builtin_tokenizer()
    assert rebuilt.get_vocab() == stored.get_vocab()
    rebuilt.save_pretrained(tmp_path)  # as an exported model ships it
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    text = CORRECT_358_274
    assert reloaded(text)["input_ids"] == stored(text)["input_ids"]
    messages = [{"role": "user", "content": "q"}]
    assert reloaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
