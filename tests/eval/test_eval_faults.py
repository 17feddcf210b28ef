# ruff: noqa: F811  (pytest fixtures imported from test_eval)
"""``redi eval`` faults (issue 16): samples reused only for the same data file, a failed first
run does not block the corrected rerun, a tokenizer that loses text is refused at load,
few extractable answers are flagged, and incomplete model directories are one line."""

import errno
import json
import shutil

import pytest
from test_eval import builtin_test_file, run_eval, tiny_model_dir  # noqa: F401

from redi.eval.runner import format_table, summarize


def test_other_data_into_the_same_output_is_refused(tiny_model_dir, builtin_test_file,
                                                    tmp_path, capsys):
    out = tmp_path / "out"
    assert run_eval(tiny_model_dir, builtin_test_file, out, samples=1) == 0
    other = tmp_path / "other.jsonl"  # same ids, other problems
    other.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"Compute {i} + 9.",
                                         "answer": str(i + 9)}) + "\n" for i in range(3)))
    capsys.readouterr()
    assert run_eval(tiny_model_dir, other, out, samples=1) == 2
    assert "other settings (data_sha256" in capsys.readouterr().err


def test_a_failed_first_run_does_not_block_the_corrected_one(tiny_model_dir,
                                                             builtin_test_file, tmp_path,
                                                             capsys):
    out = tmp_path / "out"
    assert run_eval(tmp_path / "no-such-model", builtin_test_file, out, samples=1) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert run_eval(tiny_model_dir, builtin_test_file, out, samples=1) == 0


def test_a_tokenizer_without_decoder_is_refused_at_load(tiny_model_dir, builtin_test_file,
                                                        tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    spec = json.loads((model / "tokenizer.json").read_text())
    spec["decoder"] = None
    (model / "tokenizer.json").write_text(json.dumps(spec))
    assert run_eval(model, builtin_test_file, tmp_path / "out", samples=1) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"redi eval: {model}: tokenizer does not give text back")
    assert len(err.strip().splitlines()) == 1


def test_few_answers_are_flagged_loudly():
    from redi.eval.benchmarks import Problem

    problems = [Problem(id=f"p{i}", problem="q", answer="1") for i in range(30)]
    done = {(p.id, 0): {"answer": None, "correct": False} for p in problems}
    summary = summarize(problems, done, 1, "builtin")
    assert "only 0 of 30 samples have an answer" in summary["warning"]
    assert "\nWARNING: only 0 of 30" in format_table(summary)
    done[("p0", 0)] = done[("p1", 0)] = {"answer": "1", "correct": True}
    assert "warning" not in summarize(problems, done, 1, "builtin")


def test_model_dirs_missing_weights_or_tokenizer_are_one_line(tiny_model_dir,
                                                              builtin_test_file, tmp_path,
                                                              capsys):
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    assert run_eval(no_weights, builtin_test_file, tmp_path / "a", samples=1) == 2
    err = capsys.readouterr().err
    assert err == f"redi eval: {no_weights} holds no weights (model.safetensors or " \
                  "pytorch_model.bin, or a sharded index)\n"
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_model_dir, no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tokenizer / name).unlink()
    assert run_eval(no_tokenizer, builtin_test_file, tmp_path / "b", samples=1) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"redi eval: {no_tokenizer}: no tokenizer files") and \
        len(err.splitlines()) == 1


def test_summary_line_states_percent_and_matches_the_json_fractions():
    from redi.eval.benchmarks import Problem

    problems = [Problem(id=f"p{i}", problem="q", answer="1") for i in range(100)]
    done = {(p.id, j): {"answer": "1", "correct": p.id == "p0" and j == 0}
            for p in problems for j in range(2)}
    summary = summarize(problems, done, 2, "builtin")
    assert summary["pass@1"] == pytest.approx(0.005)  # fractions in summary.json
    line = format_table(summary)
    assert "| pass@1 0.5 % ± 0.5 |" in line
    assert "| pass@2 1.0 % |" in line


def test_output_dir_faults_are_one_line(tiny_model_dir, builtin_test_file, tmp_path, capsys,
                                        monkeypatch):
    """An output path that is a file, a directory another eval holds, and a full disk."""
    from redi.eval import runner
    from redi.run_lock import RunLock

    (tmp_path / "out").write_text("keep me")
    assert run_eval(tiny_model_dir, builtin_test_file, tmp_path / "out", samples=1) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"redi eval: {tmp_path / 'out'} is a file, not a directory: choose " \
                      "another output directory"
    assert (tmp_path / "out").read_text() == "keep me"
    (tmp_path / "out").unlink()
    with RunLock(tmp_path / "out"):  # another redi eval writing there
        assert run_eval(tiny_model_dir, builtin_test_file, tmp_path / "out", samples=1) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"redi eval: {tmp_path / 'out'} is in use by another run")
    assert not (tmp_path / "out" / "samples.jsonl").exists()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner, "atomic_write_text", full)
    assert run_eval(tiny_model_dir, builtin_test_file, tmp_path / "new", samples=1) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"redi eval: no space left on the device at {tmp_path / 'new'}")
    assert not any("Traceback" in line for line in err)


def test_samples_follow_the_models_contents_not_its_path(tiny_model_dir, builtin_test_file,
                                                         tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model, out = tmp_path / "model", tmp_path / "out"
    shutil.copytree(tiny_model_dir, model)
    assert run_eval(model, builtin_test_file, out, samples=1) == 0
    moved = tmp_path / "moved"  # the same model elsewhere: its samples are reused
    shutil.copytree(model, moved)
    assert run_eval(moved, builtin_test_file, out, samples=1) == 0
    weights = load_file(model / "model.safetensors")  # retrained to the same path
    save_file({k: v + 0.01 for k, v in weights.items()}, model / "model.safetensors",
              metadata={"format": "pt"})
    capsys.readouterr()
    assert run_eval(model, builtin_test_file, out, samples=1) == 2
    assert "other settings (model_sha256" in capsys.readouterr().err


def test_samples_jsonl_records_are_checked_field_by_field(tiny_model_dir, builtin_test_file,
                                                          tmp_path, capsys):
    """A sample whose ``correct`` is not a boolean would be summed into pass@1 (a string
    counts as correct), and a line that is not UTF-8 was a decoding message naming nothing."""
    out = tmp_path / "out"
    assert run_eval(tiny_model_dir, builtin_test_file, out, samples=1) == 0
    samples = out / "samples.jsonl"
    lines = samples.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[1])
    damaged = [json.dumps({**record, "correct": "yes"}).encode() + b"\n",
               lines[1].replace(b'"text": "', b'"text": "\xff')]
    expected = [f"redi eval: {samples}: row 2: field 'correct': must be a boolean, got 'yes'",
                f"redi eval: {samples}: row 2: not UTF-8 text"]
    for line, message in zip(damaged, expected):
        samples.write_bytes(lines[0] + line + b"".join(lines[2:]))
        capsys.readouterr()
        assert run_eval(tiny_model_dir, builtin_test_file, out, samples=1) == 2
        err = capsys.readouterr().err  # after the line saying which prompt is used
        assert err.splitlines()[-1].startswith(message) and "Traceback" not in err, err


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_a_temperature_that_is_no_number_of_sampling_is_refused(tiny_model_dir,
                                                                builtin_test_file, tmp_path,
                                                                capsys, value):
    from redi.cli import main as redi_main

    code = redi_main(["eval", "--model", str(tiny_model_dir), "--data", str(builtin_test_file),
                      "--output-dir", str(tmp_path / "out"), "--benchmark", "builtin",
                      "--samples", "1", "--limit", "1", "--max-new-tokens", "4",
                      "--temperature", value])
    assert code == 2
    assert capsys.readouterr().err == (f"redi eval: temperature must be a finite number >= 0 "
                                       f"(0: greedy), got {float(value)}\n")
    assert not (tmp_path / "out").exists()
