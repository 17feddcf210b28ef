"""Evaluation: answer extraction and math-verify, pass@k against brute force, benchmark
files, a tiny model end to end, and resume."""

import itertools
import json
from math import comb

import pytest
import torch

from redi.cli import main as redi_main
from redi.data.errors import DataError
from redi.eval import (
    extract_boxed,
    grade,
    math_equal,
    mean_pass_at_k,
    pass1_with_stderr,
    pass_at_k,
    runner,
)
from redi.eval.benchmarks import load_benchmark


@pytest.mark.parametrize("gold,answer,expected", [
    (r"\frac{1}{2}", "0.5", True),
    ("0.5", r"\frac{1}{2}", True),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt 3}{2}", True),
    ("3", "4", False),
    ("3", None, False),
    ("3", r"\frac{", False),
])
def test_math_verify_equivalences(gold, answer, expected):
    assert math_equal(gold, answer) is expected


def test_extract_boxed_keeps_nested_braces_and_takes_the_last():
    text = r"first \boxed{1}, then \boxed{\frac{\sqrt{3}}{2}} done"
    assert extract_boxed(text) == r"\frac{\sqrt{3}}{2}"
    assert extract_boxed("no answer here") is None
    # a last box cut off before its brace closes is no answer (for every grader)
    assert extract_boxed(r"\boxed{2} and an unclosed \boxed{3") is None


def test_no_answer_is_wrong():
    assert grade("5", "I think it is five.") == (None, False)
    assert grade("632", r"... \boxed{632}", grader="exact") == ("632", True)
    assert grade("632", r"\boxed{0632}", grader="exact") == ("0632", True)
    assert grade("632", r"\boxed{633}", grader="exact") == ("633", False)


def brute_force_pass_at_k(verdicts, k):
    subsets = list(itertools.combinations(verdicts, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(n, c, k) for n in range(1, 8) for c in range(n + 1)
                                   for k in range(1, n + 1)])
def test_pass_at_k_equals_brute_force(n, c, k):
    verdicts = [True] * c + [False] * (n - c)
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(verdicts, k), abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_pass1_and_standard_error_over_samples():
    correct = [[True, False, True, True], [False, False, True, False], [True, True, True, False]]
    # per-sample scores: 2/3, 1/3, 3/3, 1/3 -> mean 7/12, sample std over 4 samples
    scores = [2 / 3, 1 / 3, 1.0, 1 / 3]
    mean = sum(scores) / 4
    std = (sum((s - mean) ** 2 for s in scores) / 3) ** 0.5
    assert pass1_with_stderr(correct) == pytest.approx((mean, std / 2))
    assert mean_pass_at_k(correct, 4) == pytest.approx(1.0)


SCHEMAS = {
    "math500": {"problem": "What is $1+1$?", "answer": "2", "unique_id": "test/a.json"},
    "aime24": {"id": 60, "problem": "Find x.", "answer": "204"},
    "amc23": {"id": 0, "question": "How many?", "answer": 27.0},
    "minerva": {"question": "Compute the mass.", "answer": "$7.5$"},
    "olympiadbench": {"id": 1606, "question": "Prove...", "final_answer": ["$\\frac{1}{2}$"]},
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_benchmark_schemas(name, tmp_path):
    path = tmp_path / f"{name}.jsonl"
    path.write_text(json.dumps(SCHEMAS[name]) + "\n")
    (problem,) = load_benchmark(path, "auto")
    row = SCHEMAS[name]
    assert problem.problem == row.get("problem", row.get("question"))
    expected = {"math500": "2", "aime24": "204", "amc23": "27.0", "minerva": "7.5",
                "olympiadbench": r"\frac{1}{2}"}[name]
    assert problem.answer == expected
    assert problem.id == str(row.get("unique_id", row.get("id", 1)))


def test_missing_field_names_row_and_field(tmp_path, capsys):
    path = tmp_path / "math500.jsonl"
    path.write_text(json.dumps({"problem": "a", "answer": "1"}) + "\n" +
                    json.dumps({"problem": "b"}) + "\n")
    with pytest.raises(DataError, match=r"math500.jsonl: row 2: field 'answer'"):
        load_benchmark(path)
    code = redi_main(["eval", "--model", str(tmp_path), "--data", str(path), "--output-dir",
                      str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "row 2: field 'answer'" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A random tiny Qwen2 saved with the built-in tokenizer (answers are mostly garbage)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from redi.data.tokenizer import load_tokenizer

    directory = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=384, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    load_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture
def builtin_test_file(tmp_path):
    path = tmp_path / "test.jsonl"
    rows = [{"id": f"p{i}", "problem": f"Compute {i} + {i + 1}.", "answer": str(2 * i + 1)}
            for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_eval(model_dir, data, out, samples):
    return redi_main(["eval", "--model", str(model_dir), "--data", str(data), "--output-dir",
                      str(out), "--benchmark", "builtin", "--samples", str(samples),
                      "--max-new-tokens", "24", "--prompt", "plain", "--no-progress"])


def test_tiny_model_end_to_end(tiny_model_dir, builtin_test_file, tmp_path, capsys):
    assert run_eval(tiny_model_dir, builtin_test_file, tmp_path / "out", samples=2) == 0
    records = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").open()]
    assert sorted((r["id"], r["sample"]) for r in records) == [
        (f"p{i}", j) for i in range(3) for j in range(2)]
    assert all(isinstance(r["text"], str) and isinstance(r["correct"], bool) for r in records)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["problems"] == 3 and summary["samples_per_problem"] == 2
    assert summary["pass@1"] == pytest.approx(sum(r["correct"] for r in records) / 6)
    assert set(summary["pass@k"]) == {"1", "2"}
    assert "pass@1" in capsys.readouterr().out


def test_rerun_generates_only_missing_samples(tiny_model_dir, builtin_test_file, tmp_path,
                                              monkeypatch):
    out = tmp_path / "out"
    assert run_eval(tiny_model_dir, builtin_test_file, out, samples=2) == 0
    first = (out / "samples.jsonl").read_text()
    requested = []
    real = runner.make_generator

    def counting(*args, **kwargs):
        generator = real(*args, **kwargs)
        original = generator.generate

        def generate(prompts, *a, **k):
            requested.extend(prompts)
            return original(prompts, *a, **k)

        generator.generate = generate
        return generator

    monkeypatch.setattr(runner, "make_generator", counting)
    assert run_eval(tiny_model_dir, builtin_test_file, out, samples=3) == 0
    assert len(requested) == 3  # one new sample per problem
    text = (out / "samples.jsonl").read_text()
    assert text.startswith(first) and len(text.splitlines()) == 9
    assert run_eval(tiny_model_dir, builtin_test_file, out, samples=3) == 0
    assert len(requested) == 3  # nothing left to generate


def test_resumed_run_samples_what_an_uninterrupted_one_does(tiny_model_dir, builtin_test_file,
                                                            tmp_path):
    """Each sample's draw depends on (seed, problem, sample number) alone: a run killed after
    two samples and resumed writes the same texts as one that ran through."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run_eval(tiny_model_dir, builtin_test_file, whole, samples=2) == 0
    resumed.mkdir()
    for name in ("settings.json", "samples.jsonl"):
        lines = (whole / name).read_text().splitlines(keepends=True)
        (resumed / name).write_text("".join(lines if name == "settings.json" else lines[:2]))
    assert run_eval(tiny_model_dir, builtin_test_file, resumed, samples=2) == 0

    def texts(out):
        return {(r["id"], r["sample"]): r["text"]
                for r in map(json.loads, (out / "samples.jsonl").open())}

    assert texts(resumed) == texts(whole)
    assert all(texts(whole)[(f"p{i}", 0)] != texts(whole)[(f"p{i}", 1)] for i in range(3))


def test_seeded_sampler_rows_do_not_depend_on_batch_mates():
    """Row r of a batch draws the same tokens as the same row alone, from the same seed."""
    from redi.eval.generation import SamplingSettings, SeededSampler

    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    settings = SamplingSettings(temperature=0.7, top_p=0.9)
    batch = SeededSampler(settings, [11, 12, 13], torch.device("cpu"))
    alone = SeededSampler(settings, [12], torch.device("cpu"))
    for _ in range(20):
        together = batch(None, scores).argmax(-1)
        assert together[1] == alone(None, scores[1:2]).argmax(-1)[0]
    out = batch(None, scores)
    assert torch.isinf(out).sum() == 3 * 49 and (out.max(-1).values == 0).all()


def test_seeded_sampler_draws_from_the_tempered_nucleus():
    """Frequencies over 4000 seeds match softmax(scores / T) renormalized over the top-p set."""
    from redi.eval.generation import SamplingSettings, SeededSampler

    scores = torch.tensor([[2.0, 1.0, 0.5, -3.0]]).repeat(4000, 1)
    sampler = SeededSampler(SamplingSettings(temperature=0.5, top_p=0.9), list(range(4000)),
                            torch.device("cpu"))
    counts = torch.bincount(sampler(None, scores).argmax(-1), minlength=4).double() / 4000
    p = torch.softmax(scores[0].double() / 0.5, -1)  # 0.867, 0.117, 0.016, 0.000
    expected = torch.cat([p[:2] / p[:2].sum(), torch.zeros(2, dtype=torch.float64)])
    torch.testing.assert_close(counts, expected, atol=0.02, rtol=0)


def test_rerun_after_a_kill_mid_line_drops_the_torn_sample(tiny_model_dir, builtin_test_file,
                                                          tmp_path):
    out = tmp_path / "out"
    assert run_eval(tiny_model_dir, builtin_test_file, out, samples=2) == 0
    lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    torn = "".join(lines[:-1]) + lines[-1][:10]  # a kill while the last line was written
    (out / "samples.jsonl").write_text(torn)
    assert run_eval(tiny_model_dir, builtin_test_file, out, samples=2) == 0
    records = [json.loads(x) for x in (out / "samples.jsonl").open()]
    assert sorted((r["id"], r["sample"]) for r in records) == [
        (f"p{i}", j) for i in range(3) for j in range(2)]


def test_a_bad_line_in_samples_names_file_and_line(tiny_model_dir, builtin_test_file,
                                                   tmp_path, capsys):
    out = tmp_path / "out"
    assert run_eval(tiny_model_dir, builtin_test_file, out, samples=1) == 0
    text = (out / "samples.jsonl").read_text()
    (out / "samples.jsonl").write_text("not json\n" + text)
    assert run_eval(tiny_model_dir, builtin_test_file, out, samples=1) == 2
    assert "samples.jsonl: row 1" in capsys.readouterr().err


def test_rerun_with_other_sampling_settings_is_refused(tiny_model_dir, builtin_test_file,
                                                       tmp_path, capsys):
    out = tmp_path / "out"
    assert run_eval(tiny_model_dir, builtin_test_file, out, samples=1) == 0
    code = redi_main(["eval", "--model", str(tiny_model_dir), "--data", str(builtin_test_file),
                      "--output-dir", str(out), "--benchmark", "builtin", "--samples", "1",
                      "--max-new-tokens", "24", "--prompt", "plain", "--no-progress",
                      "--temperature", "1.0"])
    assert code == 2
    assert "other settings (sampling" in capsys.readouterr().err


def test_zero_samples_is_a_usage_error(tiny_model_dir, builtin_test_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_eval(tiny_model_dir, builtin_test_file, tmp_path / "out", samples=0)
    assert exit_info.value.code == 2
    assert "--samples must be >= 1" in capsys.readouterr().err
