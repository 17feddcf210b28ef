"""``redi prepare`` on bad input (named errors, exit 2, counted with --skip-invalid) and
its speed on 100k generated traces."""

import json
import time

import pytest

from redi.cli import main
from redi.data.builtin_task import write_task

GOOD = {"problem": "p", "generations": ["a", "b"],
        "correctness": {"llama_verification": [True, False],
                        "math_verify_reparsed_answer": [True, False]},
        "problem_is_valid": "Yes", "source": "s"}


def with_(**changes):
    row = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if key == "correctness":
            row["correctness"].update(value)
        elif value is ...:
            del row[key]
        else:
            row[key] = value
    return json.dumps(row)


# (bad line, the error text after "FILE: row 2: ", the reason counted with --skip-invalid)
BAD_ROWS = {
    "missing field": (with_(generations=...), "field 'generations': missing", "missing_field"),
    "wrong type": (with_(problem=5), "field 'problem': expected a string, got int", "wrong_type"),
    "wrong element type": (with_(correctness={"llama_verification": [True, "yes"]}),
                           "field 'correctness.llama_verification[1]': expected a boolean, got str",
                           "wrong_type"),
    "length mismatch": (with_(correctness={"math_verify_reparsed_answer": [True]}),
                        "field 'correctness.math_verify_reparsed_answer': 1 verdicts for 2 "
                        "generations", "length_mismatch"),
    "empty problem": (with_(problem="  "), "field 'problem': empty problem", "empty_problem"),
    "empty trace": (with_(generations=["a", ""]), "field 'generations[1]': empty trace",
                    "empty_trace"),
    "undecodable line": ('{"problem": "p", "generations": [', "not valid JSON",
                         "undecodable_line"),
    "not an object": ("[1, 2]", "expected an object, got list", "wrong_type"),
    "wrong answer type": (with_(answer=[1]), "field 'answer': expected a string or a number, "
                          "got list", "wrong_type"),
    "bad messages": ('{"messages": [{"role": "user", "content": "q"}]}'.replace(
        "messages", "problem"), "field 'problem': expected a string, got list", "wrong_type"),
}


def prepare_cli(tmp_path, lines, *flags):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = main(["prepare", "--input", str(source), "--output-dir", str(out), "--no-progress",
                 *flags])
    return code, source, out


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_is_a_named_error_and_exit_2(tmp_path, capsys, case):
    line, message, _ = BAD_ROWS[case]
    code, source, out = prepare_cli(tmp_path, [json.dumps(GOOD), line, json.dumps(GOOD)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"redi prepare: error: {source}: row 2: {message}")
    assert "Traceback" not in err
    assert not (out / "sft.jsonl").exists()


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_is_dropped_and_counted_with_skip_invalid(tmp_path, capsys, case):
    line, _, reason = BAD_ROWS[case]
    other = json.dumps({**GOOD, "problem": "another problem"})  # not a duplicate of GOOD
    code, _, out = prepare_cli(tmp_path, [json.dumps(GOOD), line, other],
                               "--skip-invalid")
    assert code == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["invalid"] == {reason: 1}
    assert stats["rows"] == {"read": 3, "invalid": 1, "filtered": 0, "kept": 2}
    assert len((out / "sft.jsonl").read_text().splitlines()) == 2
    assert f"skipped invalid rows: {{'{reason}': 1}}" in capsys.readouterr().err


def test_trl_rows_are_validated_too(tmp_path, capsys):
    good = {"prompt": [{"role": "user", "content": "q"}],
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}]}
    bad = dict(good, rejected=[{"role": "user", "content": "b"}])
    code, source, _ = prepare_cli(tmp_path, [json.dumps(good), json.dumps(bad)])
    assert code == 2
    assert capsys.readouterr().err.startswith(
        f"redi prepare: error: {source}: row 2: field 'rejected[0].role': the last message "
        "must be from the assistant, not the user")
    code, _, out = prepare_cli(tmp_path, [json.dumps(good), json.dumps(bad)], "--skip-invalid")
    assert code == 0
    assert json.loads((out / "stats.json").read_text())["invalid"] == {"wrong_role": 1}


def test_missing_file_is_an_error_even_with_skip_invalid(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    for flags in ([], ["--skip-invalid"]):
        assert main(["prepare", "--input", str(missing), "--output-dir", str(tmp_path / "o"),
                     *flags]) == 2
        err = capsys.readouterr().err
        assert err == f"redi prepare: error: {missing}: no such file or directory\n"


def test_missing_tokenizer_directory_is_an_error(tmp_path, capsys):
    code, _, _ = prepare_cli(tmp_path, [json.dumps(GOOD)], "--tokenizer", str(tmp_path / "tok"))
    assert code == 2
    assert capsys.readouterr().err == (
        f"redi prepare: error: {tmp_path / 'tok'}: no such tokenizer directory\n")


def test_input_with_no_valid_row_is_an_error(tmp_path, capsys):
    code, source, _ = prepare_cli(tmp_path, ["{bad", "{worse"], "--skip-invalid")
    assert code == 2
    assert capsys.readouterr().err == (
        f"redi prepare: error: {source}: no valid rows (2 invalid rows skipped)\n")


def test_unknown_format_is_an_error(tmp_path, capsys):
    code, source, _ = prepare_cli(tmp_path, ['{"question": "q"}'])
    assert code == 2
    assert capsys.readouterr().err.startswith(
        f"redi prepare: error: {source}: row 1: cannot tell the input format")


@pytest.mark.slow
def test_100k_traces_prepare_within_60_seconds(tmp_path, capsys):
    raw = write_task(tmp_path, num_problems=25_000, num_test=10, seed=1, task="slips",
                     generations=4)["raw"]
    started = time.perf_counter()
    code = main(["prepare", "--input", str(raw), "--output-dir", str(tmp_path / "out"),
                 "--no-progress"])
    seconds = time.perf_counter() - started
    assert code == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    kept = 25_000 - stats["filtered"].get("duplicate_problem", 0)  # the generator repeats some
    assert stats["rows"]["kept"] == kept
    assert stats["sft"]["written"] + stats["sft"]["dropped"]["no_correct_trace"] == kept
    with capsys.disabled():
        print(f"\n100k traces (25k problems x 4) prepared in {seconds:.1f} s")
    assert seconds <= 60


def test_old_flag_spellings_work_with_a_deprecation_message(tmp_path, capsys):
    lines = [json.dumps(GOOD)]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    code = main(["prepare", "--input", str(source), "--output", str(tmp_path / "old"),
                 "--max-prompt-tokens", "0", "--max-response-tokens", "5", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0 and (tmp_path / "old" / "stats.json").is_file()
    assert "--output is deprecated" in err and "use --output-dir" in err
    assert "--max-prompt-tokens is deprecated" in err and "use --max-prompt-length" in err
    new_code = main(["prepare", "--input", str(source), "--output-dir", str(tmp_path / "new"),
                     "--max-prompt-length", "0", "--max-response-length", "5", "--no-progress"])
    assert new_code == 0
    old_stats = json.loads((tmp_path / "old" / "stats.json").read_text())
    new_stats = json.loads((tmp_path / "new" / "stats.json").read_text())
    for key in ("options", "rows", "sft", "pairs"):
        assert old_stats[key] == new_stats[key], key
    assert old_stats["options"]["max_response_tokens"] == 5


def test_output_dir_is_required_in_either_spelling(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--builtin"])
    assert exit_info.value.code == 2
    assert "--output-dir" in capsys.readouterr().err
