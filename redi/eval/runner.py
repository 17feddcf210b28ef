"""``redi eval``: sample k completions per problem, grade them, score pass@1 and pass@k.

``OUT/samples.jsonl`` gets one line per finished sample (problem id, sample index, text,
extracted answer, correct), appended as batches finish, so a rerun with the same ``OUT``
generates only the samples that are missing (one ``redi eval`` per ``OUT`` at a time:
``redi.run_lock``). ``OUT/summary.json`` holds pass@1, its
standard error, pass@k, the counts and the grader (``redi.eval.is_correct``; a sample
graded by another grader in an earlier run is graded again from its text). Prompts are the
training format's: the tokenizer's chat template around the problem (worded as
``EvalOptions.prompt_style`` says; ``redi eval`` picks it, see ``redi.eval.defaults``), with
the completion started by ``<think>\\n``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from redi.data.errors import DataError
from redi.data.formatting import Formatter
from redi.data.tokenizer import check_round_trip, load_tokenizer
from redi.files import (
    atomic_path,
    atomic_write_text,
    full_disk_reported,
    make_output_dir,
    sha256_of,
)
from redi.grading.answers import grade
from redi.model_dir import check_model_dir, model_fingerprint
from redi.run_lock import RunLock

from .benchmarks import Problem, detect_benchmark, load_benchmark
from .defaults import default_grader
from .generation import SamplingSettings, make_generator, sample_seed
from .scoring import mean_pass_at_k, pass1_with_stderr


@dataclass(frozen=True)
class EvalOptions:
    samples: int = 16
    sampling: SamplingSettings = SamplingSettings()
    backend: str = "hf"
    prompt_style: str = "openr1"
    think: bool = True
    batch_size: int = 32
    limit: int | None = None  # evaluate the first N problems only
    grader: str | None = None  # rllm | math-verify | exact; None: exact for the built-in
    # task, else rllm (redi.eval.defaults.default_grader)


# The fields of a sample record that a rerun reads, and their JSON types.
SAMPLE_FIELDS = {"id": (str,), "sample": (int,), "text": (str,), "answer": (str, type(None)),
                 "correct": (bool,)}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", type(None): "null"}


def _check_sample(path: Path, number: int, record) -> None:
    """One line of ``samples.jsonl`` must be a sample record of redi eval: a wrong type
    (``"correct": "yes"`` would count as a correct sample) is an error naming the field."""
    if not isinstance(record, dict):
        raise DataError(str(path), number, None, "bad_sample",
                        "not a sample record of redi eval (not a JSON object)")
    for key, types in SAMPLE_FIELDS.items():
        if key not in record:
            raise DataError(str(path), number, key, "bad_sample", "missing")
        value = record[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(_TYPE_NAMES[t] for t in types)
            raise DataError(str(path), number, key, "bad_sample",
                            f"must be {expected}, got {value!r}")


def read_samples(path: Path) -> dict[tuple[str, int], dict]:
    """Finished samples of an earlier run, by (problem id, sample index). A last line cut
    short by a kill (no final newline) is dropped from the file, so appending continues
    cleanly; any other bad line (not UTF-8, not JSON, not a sample record) is an error
    naming the file and line."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with atomic_path(path) as tmp:  # a second kill here must not lose the whole file
            tmp.write_bytes(data)
    done = {}
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            text = line.decode()
        except UnicodeDecodeError as err:
            raise DataError(str(path), number, None, "bad_sample",
                            f"not UTF-8 text ({err})") from None
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(str(path), number, None, "bad_sample",
                            f"not a sample record of redi eval ({err})") from None
        _check_sample(path, number, record)
        done[(record["id"], record["sample"])] = record
    return done


def check_same_settings(path: Path, settings: dict, have_samples: bool) -> None:
    """Samples already in OUT must come from the same model (by its files' contents, not
    its path), data file, prompt and sampling settings: the settings of the run that drew
    them are kept in ``path`` and compared on every rerun. Settings without samples (a run
    that failed before its first sample) bind nothing and are replaced."""
    if path.is_file() and have_samples:
        stored = json.loads(path.read_text())
        changed = sorted(k for k in settings if stored.get(k) != settings[k])
        if changed:
            raise ValueError(f"{path.parent} holds samples drawn with other settings "
                             f"({', '.join(changed)}: {[stored.get(k) for k in changed]}); "
                             "use another --output-dir")
        return
    atomic_write_text(path, json.dumps(settings, indent=1))


# "almost no sample has an answer": fewer than this share of the samples
FEW_ANSWERS = 0.05


def regrade(problems: list[Problem], done: dict, grader: str) -> None:
    """Grade again, from their text, the samples an earlier run graded with another grader."""
    by_id = {p.id: p for p in problems}
    stale = [k for k, r in done.items() if k[0] in by_id and r.get("grader") != grader]
    for key in stale:
        answer, correct = grade(by_id[key[0]].references, done[key]["text"], grader)
        done[key] = {**done[key], "answer": answer, "correct": correct, "grader": grader}


def summarize(problems: list[Problem], done: dict, samples: int, benchmark: str) -> dict:
    correct = [[done[(p.id, j)]["correct"] for j in range(samples)] for p in problems]
    pass1, stderr = pass1_with_stderr(correct)
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k <= samples} | {samples})
    answered = sum(done[(p.id, j)]["answer"] is not None for p in problems
                   for j in range(samples))
    summary = {
        "benchmark": benchmark, "problems": len(problems), "samples_per_problem": samples,
        "pass@1": pass1, "pass@1_stderr": stderr,
        "pass@k": {str(k): mean_pass_at_k(correct, k) for k in ks},
        "correct": sum(map(sum, correct)),
        "answered": answered,
    }
    total = len(problems) * samples
    if total and answered < FEW_ANSWERS * total:
        summary["warning"] = (
            f"only {answered} of {total} samples have an answer the grader can extract: the "
            "score says little; check the samples' text (tokenizer decoding, prompt, "
            "max_new_tokens) in samples.jsonl")
    return summary


def evaluate(model_dir: str, data_path: str, output_dir: str, benchmark: str = "auto",
             options: EvalOptions = EvalOptions(), progress: bool = True) -> dict:
    """Run (or finish) an evaluation; returns the summary written to OUT/summary.json. A
    full disk is a one-line OutputError (the samples finished so far are kept)."""
    problems = load_benchmark(data_path, benchmark)[: options.limit]
    benchmark = benchmark if benchmark != "auto" else (detect_benchmark(data_path) or "generic")
    options = replace(options, grader=options.grader or default_grader(benchmark))
    out = make_output_dir(output_dir)
    with RunLock(out), full_disk_reported(out, "free space and rerun: the finished samples "
                                               "are kept"):
        return _evaluate(model_dir, data_path, out, benchmark, problems, options, progress)


def _evaluate(model_dir: str, data_path: str, out: Path, benchmark: str,
              problems: list[Problem], options: EvalOptions, progress: bool) -> dict:
    samples_path = out / "samples.jsonl"
    done = read_samples(samples_path)
    check_model_dir(model_dir)
    check_same_settings(out / "settings.json", {
        "model_sha256": model_fingerprint(model_dir), "data_sha256": sha256_of(data_path),
        "prompt_style": options.prompt_style, "think": options.think,
        "sampling": asdict(options.sampling)}, have_samples=bool(done))
    todo = [(p, j) for p in problems for j in range(options.samples) if (p.id, j) not in done]
    if todo:
        tokenizer = load_tokenizer(model_dir)
        check_round_trip(tokenizer, [p.problem for p in problems])
        formatter = Formatter(tokenizer, prompt_style=options.prompt_style)
        generator = make_generator(options.backend, model_dir, options.batch_size)
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="eval", unit="sample", disable=not progress)
        with samples_path.open("a") as f:
            for start in range(0, len(todo), options.batch_size):
                chunk = todo[start:start + options.batch_size]
                prompts = [formatter.generation_prompt(p.problem, options.think)
                           for p, _ in chunk]
                seeds = [sample_seed(options.sampling.seed, p.id, j) for p, j in chunk]
                texts = generator.generate(prompts, options.sampling, seeds,
                                           stop_token_ids=formatter.stop_token_ids)
                for (p, j), text in zip(chunk, texts, strict=True):
                    answer, correct = grade(p.references, text, options.grader)
                    record = {"id": p.id, "sample": j, "text": text, "answer": answer,
                              "gold": p.answer, "correct": correct, "grader": options.grader}
                    done[(p.id, j)] = record
                    f.write(json.dumps(record) + "\n")
                f.flush()
                bar.update(len(chunk))
        bar.close()
    regrade(problems, done, options.grader)
    summary = summarize(problems, done, options.samples, benchmark)
    summary.update(model=str(model_dir), data=str(data_path), grader=options.grader,
                   options={**asdict(options), "sampling": asdict(options.sampling)})
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def format_table(summary: dict) -> str:
    """One line in percent (summary.json holds the same scores as fractions, by these names)."""
    ks = "".join(f" | pass@{k} {100 * v:.1f} %" for k, v in summary["pass@k"].items()
                 if k != "1")
    return (f"{summary['benchmark']}: {summary['problems']} problems x "
            f"{summary['samples_per_problem']} samples | pass@1 {100 * summary['pass@1']:.1f} "
            f"% ± {100 * summary['pass@1_stderr']:.1f}{ks} | answered "
            f"{summary['answered']}/{summary['problems'] * summary['samples_per_problem']}"
            + (f"\nWARNING: {summary['warning']}" if "warning" in summary else ""))
