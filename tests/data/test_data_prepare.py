"""The paper's OpenR1-Math-Raw rules and the TRL formats, through ``redi prepare``."""

import json

import datasets
import pytest

from redi.cli import main
from redi.data.formatting import Formatter
from redi.data.prepare import PrepareOptions, prepare
from redi.data.tokenizer import load_tokenizer


def raw(problem, generations, llama, reparsed, valid="Yes", source="olympiads", **extra):
    return {"problem": problem, "generations": generations,
            "correctness": {"llama_verification": llama, "math_verify_reparsed_answer": reparsed,
                            "math_verify_answer": [True] * len(generations)},
            "problem_is_valid": valid, "source": source, **extra}


# One row per rule; comments give the expected outcome.
ROWS = [
    # gen 0: llama yes but reparsed no -> incorrect; gen 1 first correct -> SFT 1, pair (1, 0)
    raw("p1", ["t1a", "t1b", "t1c"], [True, True, True], [False, True, True], uuid="u1",
        answer="1"),
    raw("p2", ["t2"], [True], [True], source="cn_k12"),                  # dropped source
    raw("p3", ["t3"], [True], [True], valid="NO"),                       # not valid
    raw("p4", ["t4"], [False], [True], valid="  YES "),  # valid (case, spaces); no correct trace
    raw("p5", ["t5a", "t5b"], [True, True], [True, True], valid="yes"),  # SFT t5a, no pair
    raw("p6", ["t6"], [True], [True], valid=None),                       # null validity: not valid
    raw("long " * 40, ["t7a", "t7b"], [True, False], [True, True]),      # pair prompt too long
    raw("p8", ["t8a", "wrong " * 40], [True, False], [True, False]),     # pair response too long
    raw("p9", ["t9a", "t9b"], [None, True], [True, True]),               # null verdict -> incorrect
]
KEPT = [0, 3, 4, 6, 7, 8]  # indices into ROWS that pass the source and validity rules


@pytest.fixture(scope="module")
def formatter():
    return Formatter(load_tokenizer())


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(tmp_path, formatter, rows=ROWS, **options):
    source = write_jsonl(tmp_path / "raw.jsonl", rows)
    options = {"max_prompt_tokens": 30, "max_response_tokens": 30, "progress": False} | options
    stats = prepare(source, tmp_path / "out", formatter, PrepareOptions(**options))
    return stats, tmp_path / "out"


def test_every_rule_on_a_hand_built_fixture(tmp_path, formatter):
    stats, out = run(tmp_path, formatter)
    assert stats["rows"] == {"read": 9, "invalid": 0, "filtered": 3, "kept": 6}
    assert stats["filtered"] == {"dropped_source": 1, "problem_not_valid": 2}
    assert stats["null_verdicts"] == 1
    assert stats["sft"] == {"written": 5, "dropped": {"no_correct_trace": 1}}
    assert stats["pairs"] == {"written": 2, "dropped": {
        "no_correct_trace": 1, "no_incorrect_trace": 1, "prompt_too_long": 1,
        "response_too_long": 1}, "identical_completions": 0}
    sft = {r["messages"][0]["content"]: r for r in read_jsonl(out / "sft.jsonl")}
    assert {p: r["messages"][1]["content"] for p, r in sft.items()} == {
        "p1": "t1b", "p5": "t5a", "long " * 40: "t7a", "p8": "t8a", "p9": "t9b"}
    pairs = {r["prompt"][0]["content"]: r for r in read_jsonl(out / "pairs.jsonl")}
    assert {p: (r["chosen"][0]["content"], r["rejected"][0]["content"])
            for p, r in pairs.items()} == {"p1": ("t1b", "t1a"), "p9": ("t9b", "t9a")}
    assert pairs["p1"] == {
        "prompt": [{"role": "user", "content": "p1"}],
        "chosen": [{"role": "assistant", "content": "t1b"}],
        "rejected": [{"role": "assistant", "content": "t1a"}],
        "source": "olympiads", "uuid": "u1", "row": f"{tmp_path / 'raw.jsonl'}:1", "answer": "1",
        "chosen_generation": 1, "rejected_generation": 0}
    assert sft["p9"]["uuid"] is None and sft["p9"]["row"].endswith("raw.jsonl:9")
    assert sft["p9"]["generation"] == 1 and "answer" not in sft["p9"]


def test_a_numeric_answer_is_kept_as_text(tmp_path, formatter):
    _, out = run(tmp_path, formatter, rows=[raw("p", ["t"], [True], [True], answer=9)])
    assert read_jsonl(out / "sft.jsonl")[0]["answer"] == "9"


def test_kept_problems_are_written_in_the_seed_42_shuffle_order(tmp_path, formatter):
    _, out = run(tmp_path, formatter, max_prompt_tokens=None, max_response_tokens=None)
    shuffled = datasets.Dataset.from_list([ROWS[i] for i in KEPT]).shuffle(seed=42)["problem"]
    with_correct = [p for p in shuffled if p != "p4"]
    with_pair = [p for p in shuffled if p in ("p1", "long " * 40, "p8", "p9")]
    assert [r["messages"][0]["content"] for r in read_jsonl(out / "sft.jsonl")] == with_correct
    assert [r["prompt"][0]["content"] for r in read_jsonl(out / "pairs.jsonl")] == with_pair
    _, out = run(tmp_path, formatter, shuffle_seed=1, max_prompt_tokens=None,
                 max_response_tokens=None)
    shuffled = datasets.Dataset.from_list([ROWS[i] for i in KEPT]).shuffle(seed=1)["problem"]
    assert [r["messages"][0]["content"] for r in read_jsonl(out / "sft.jsonl")] == [
        p for p in shuffled if p != "p4"]


def test_length_limits_are_configurable_and_counted_with_the_tokenizer(tmp_path, formatter):
    stats, _ = run(tmp_path, formatter, max_prompt_tokens=None, max_response_tokens=None)
    assert stats["pairs"]["written"] == 4
    prompt_tokens = len(formatter.encode_prompt("long " * 40, think=False))
    stats, _ = run(tmp_path, formatter, max_prompt_tokens=prompt_tokens, max_response_tokens=None)
    assert stats["pairs"]["written"] == 4
    stats, _ = run(tmp_path, formatter, max_prompt_tokens=prompt_tokens - 1,
                   max_response_tokens=None)
    assert stats["pairs"]["dropped"]["prompt_too_long"] == 1
    assert stats["token_lengths"]["pairs"]["prompt"]["max"] == len(
        formatter.encode_prompt("p1", think=False))


def test_dropped_sources_are_configurable(tmp_path, formatter):
    stats, out = run(tmp_path, formatter, dropped_sources=("olympiads",))
    assert stats["filtered"] == {"dropped_source": 8}
    assert [r["messages"][0]["content"] for r in read_jsonl(out / "sft.jsonl")] == ["p2"]


def test_token_length_percentiles(tmp_path, formatter):
    stats, out = run(tmp_path, formatter)
    totals = sorted(len(formatter.encode_sft([r["messages"]])[0]["input_ids"])
                    for r in read_jsonl(out / "sft.jsonl"))
    summary = stats["token_lengths"]["sft"]["total"]
    assert (summary["count"], summary["min"], summary["max"], summary["p50"]) == (
        5, totals[0], totals[-1], float(totals[2]))


def test_parquet_and_saved_dataset_inputs_match_jsonl(tmp_path, formatter):
    rows = [r for r in ROWS if r["problem_is_valid"] is not None]
    stats, out = run(tmp_path, formatter, rows=rows)
    expected = (out / "sft.jsonl").read_text().replace(str(tmp_path / "raw.jsonl"), "F")
    table = datasets.Dataset.from_list(rows)
    table.to_parquet(str(tmp_path / "raw.parquet"))
    table.save_to_disk(str(tmp_path / "saved"))
    for source in (tmp_path / "raw.parquet", tmp_path / "saved"):
        prepare(source, tmp_path / "o2", formatter, PrepareOptions(progress=False))
        text = (tmp_path / "o2" / "sft.jsonl").read_text()
        location = str(source if source.suffix else source / "data-00000-of-00001.arrow")
        assert text.replace(str(source), "F").replace(location, "F") == expected


def test_trl_formats_are_accepted_as_they_are(tmp_path, formatter):
    messages = [{"messages": [{"role": "system", "content": "be brief"},
                              {"role": "user", "content": "q"},
                              {"role": "assistant", "content": "a"}]}]
    write_jsonl(tmp_path / "sft_in.jsonl", messages)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "pairs.jsonl").write_text("stale, from an earlier run\n")
    stats = prepare(tmp_path / "sft_in.jsonl", tmp_path / "o", formatter,
                    PrepareOptions(progress=False))
    assert stats["format"] == "messages" and stats["sft"]["written"] == 1
    assert read_jsonl(tmp_path / "o" / "sft.jsonl") == [
        messages[0] | {"row": f"{tmp_path / 'sft_in.jsonl'}:1"}]
    assert not (tmp_path / "o" / "pairs.jsonl").exists()
    pairs = [{"prompt": [{"role": "user", "content": "q"}],
              "chosen": [{"role": "assistant", "content": "a"}],
              "rejected": [{"role": "assistant", "content": "b"}]}]
    write_jsonl(tmp_path / "pairs_in.jsonl", pairs)
    stats = prepare(tmp_path / "pairs_in.jsonl", tmp_path / "p", formatter,
                    PrepareOptions(progress=False))
    assert stats["format"] == "preference" and stats["pairs"]["written"] == 1
    assert read_jsonl(tmp_path / "p" / "pairs.jsonl") == [
        pairs[0] | {"row": f"{tmp_path / 'pairs_in.jsonl'}:1"}]


def test_builtin_command_writes_the_task_and_its_prepared_files(tmp_path, capsys):
    out = tmp_path / "task"
    assert main(["prepare", "--builtin", "--output-dir", str(out), "--num-problems", "200",
                 "--num-test", "20", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "pairs.jsonl", "raw.jsonl", "sft.jsonl", "stats.json", "test.jsonl", "test_pairs.jsonl",
        "validation.jsonl"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows"] == {"read": 200, "invalid": 0, "filtered": 0, "kept": 200}
    assert stats["sft"]["written"] + stats["sft"]["dropped"].get("no_correct_trace", 0) == 200
    assert len(read_jsonl(out / "test.jsonl")) == 20
    assert "sft.jsonl" in capsys.readouterr().out
