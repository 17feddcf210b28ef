"""``redi prepare`` faults (issue 16): JSONL lines that are arrays, duplicate problems,
mixed-format directories, skipped file types, a tokenizer that loses text, and outputs
swapped in together (a failed run leaves nothing that looks complete)."""

import json

import pytest

from redi.cli import main
from redi.data import prepare as prepare_module
from redi.data.errors import DataError
from redi.data.formatting import Formatter
from redi.data.prepare import PrepareOptions, prepare
from redi.data.tokenizer import check_round_trip, load_tokenizer
from redi.files import OutputError

ROW = {"problem": "What is 2 + 3?", "generations": ["5", "6"],
       "correctness": {"llama_verification": [True, False],
                       "math_verify_reparsed_answer": [True, False]},
       "problem_is_valid": "Yes", "source": "s"}


def _row(problem):
    return json.dumps({**ROW, "problem": problem})


def _prepare_cli(tmp_path, source, *flags):
    return main(["prepare", "--input", str(source), "--output", str(tmp_path / "out"),
                 "--no-progress", *flags])


def test_jsonl_whose_first_line_is_an_array_is_read_line_by_line(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text("[1, 2]\n" + _row("a") + "\n" + _row("b") + "\n")
    assert _prepare_cli(tmp_path, source, "--skip-invalid", "--format", "openr1") == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["rows"] == {"read": 3, "invalid": 1, "filtered": 0, "kept": 2}
    assert _prepare_cli(tmp_path, source, "--format", "openr1") == 2
    assert f"{source}: row 1: expected an object, got list" in capsys.readouterr().err


def test_duplicate_problems_are_counted_and_the_first_kept(tmp_path):
    source = tmp_path / "in.jsonl"
    first = {**ROW, "problem": "same", "generations": ["first", "x"]}
    second = {**ROW, "problem": "same", "generations": ["second", "y"]}
    source.write_text("\n".join(map(json.dumps, [first, second, json.loads(_row("other"))])))
    assert _prepare_cli(tmp_path, source) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["filtered"] == {"duplicate_problem": 1}
    assert stats["rows"]["kept"] == 2
    traces = [json.loads(line)["messages"][1]["content"]
              for line in (tmp_path / "out" / "sft.jsonl").open()]
    assert "first" in traces and "second" not in traces


def test_a_file_of_another_format_is_named_even_with_skip_invalid(tmp_path, capsys):
    directory = tmp_path / "in"
    directory.mkdir()
    (directory / "a.jsonl").write_text(_row("a") + "\n")
    other = directory / "b.jsonl"
    other.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    (directory / "notes.txt").write_text("not data")
    (directory / "table.csv").write_text("a,b\n")
    assert _prepare_cli(tmp_path, directory, "--skip-invalid") == 2
    err = capsys.readouterr().err
    assert f"{other}: row 1: this file holds messages rows, but this run prepares openr1" in err
    other.unlink()
    assert _prepare_cli(tmp_path, directory) == 0
    err = capsys.readouterr().err
    skipped = [str(directory / "notes.txt"), str(directory / "table.csv")]
    assert f"skipped files of other types: {', '.join(skipped)}" in err
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["skipped_files"] == skipped


class _LossyTokenizer:
    """Decodes tokens joined by spaces, as a tokenizer without a decoder does."""

    name_or_path = "tok/char-level"

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=False):
        return " ".join(chr(i) for i in ids)


def test_a_tokenizer_that_loses_text_is_a_named_error():
    check_round_trip(load_tokenizer(), ["any text\n\n  with spaces \\boxed{7}"])
    with pytest.raises(DataError, match=r"^tok/char-level: tokenizer does not give text back"):
        check_round_trip(_LossyTokenizer())


def test_prepare_checks_the_tokenizer_on_the_data(tmp_path, monkeypatch):
    source = tmp_path / "in.jsonl"
    source.write_text(_row("Compute 4 + 4.\u00a0Then stop.") + "\n")
    tokenizer = load_tokenizer()
    original = tokenizer.decode
    monkeypatch.setattr(tokenizer, "decode",
                        lambda ids, **kw: original(ids, **kw).replace("\u00a0", " "))
    with pytest.raises(DataError, match="tokenizer does not give text back.*character 14"):
        prepare(source, tmp_path / "out", Formatter(tokenizer), PrepareOptions(progress=False))


def test_outputs_are_swapped_in_together(tmp_path, monkeypatch):
    source = tmp_path / "in.jsonl"
    source.write_text(_row("a") + "\n" + _row("b") + "\n")
    out = tmp_path / "out"
    formatter = Formatter(load_tokenizer())
    options = PrepareOptions(progress=False)
    prepare(source, out, formatter, options)
    before = {n: (out / n).read_text() for n in ("sft.jsonl", "pairs.jsonl", "stats.json")}

    def disk_full(self, directory):
        (directory / "sft.jsonl").write_text("partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepare_module._Preparer, "write", disk_full)
    with pytest.raises(OutputError, match=f"^no space left on the device at {out} "):
        prepare(source, out, formatter, options)
    # nothing that looks complete, no staging left on the full disk, and the previous
    # outputs kept aside, whole
    assert not any((out / n).exists() for n in before)
    assert not (out / ".prepare.tmp").exists()
    assert {n: (out / ".prepare-previous" / n).read_text() for n in before} == before
    monkeypatch.undo()
    prepare(source, out, formatter, options)
    assert {n: (out / n).read_text() for n in before}.keys() == before.keys()
    assert not (out / ".prepare-previous").exists() and not (out / ".prepare.tmp").exists()


def test_output_dir_faults_are_one_line(tmp_path, capsys, monkeypatch):
    """An output path that is a file, a directory another prepare holds, a full disk."""
    from redi.run_lock import RunLock

    source = tmp_path / "in.jsonl"
    source.write_text(_row("a") + "\n")

    def prepare_cli():
        return main(["prepare", "--input", str(source), "--output-dir", str(tmp_path / "out"),
                     "--no-progress"])

    (tmp_path / "out").write_text("keep me")
    assert prepare_cli() == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'out'} is a file, not a directory" in err
    assert len(err.splitlines()) == 1 and (tmp_path / "out").read_text() == "keep me"
    (tmp_path / "out").unlink()
    with RunLock(tmp_path / "out"):
        assert prepare_cli() == 2
    err = capsys.readouterr().err
    assert "is in use by another run" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "stats.json").exists()

    def disk_full(self, directory):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepare_module._Preparer, "write", disk_full)
    assert prepare_cli() == 2
    err = capsys.readouterr().err
    assert err.startswith(f"redi prepare: error: no space left on the device at "
                          f"{tmp_path / 'out'}") and len(err.splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def _pair(chosen, rejected):
    return json.dumps({"prompt": [{"role": "user", "content": "What is 2 + 3?"}],
                       "chosen": [{"role": "assistant", "content": chosen}],
                       "rejected": [{"role": "assistant", "content": rejected}]})


def test_identical_pairs_are_counted_dropped_and_an_all_identical_set_refused(tmp_path,
                                                                               capsys):
    """chosen == rejected teaches no preference (DPO's loss is a constant log 2)."""
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join([_pair("5", "5"), _pair("5", "6"), _pair("4", "4")]) + "\n")
    assert _prepare_cli(tmp_path, source) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["pairs"] == {"written": 1, "dropped": {"identical_completions": 2},
                              "identical_completions": 2}
    assert _prepare_cli(tmp_path, source, "--keep-identical-pairs") == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["pairs"] == {"written": 3, "dropped": {}, "identical_completions": 2}
    source.write_text("\n".join([_pair("5", "5"), _pair("4", "4")]) + "\n")
    capsys.readouterr()
    for flags in ((), ("--keep-identical-pairs",)):
        assert _prepare_cli(tmp_path, source, *flags) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]  # after --output's notice
        assert line == (f"redi prepare: error: {source}: all 2 pairs have the same chosen and "
                        "rejected completion: there is no preference to learn")


def test_training_refuses_pairs_that_are_all_identical(tmp_path):
    from redi.data.tokenized import load_pairs

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join([_pair("5", "5"), _pair("4", "4")]) + "\n")
    with pytest.raises(DataError, match=f"^{pairs}: all 2 pairs have the same chosen and "):
        load_pairs(pairs, Formatter(load_tokenizer()))
    pairs.write_text("\n".join([_pair("5", "5"), _pair("4", "3")]) + "\n")
    assert len(load_pairs(pairs, Formatter(load_tokenizer()))) == 2
