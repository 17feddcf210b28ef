"""The built-in teacher: a small model whose own verified-wrong samples are the negatives.

The paper's negatives are DeepSeek-R1's samples that fail the answer check, not made-up
mistakes. The built-in task is made the same way, at toy scale:

1. a "teacher" (the tiny Qwen2 of ``recipes/tiny_teacher.yaml``, the student's
   architecture) is trained on rule-generated *correct* column-addition traces of
   ``rule_problems`` problems (``redi.data.builtin_task`` with ``column_error=0``) for a
   short schedule, so it has learnt the format and most of the arithmetic but still slips;
2. it is sampled several times per training problem at ``TeacherSettings.temperature``
   (0.6, chosen so that about half the samples are wrong), from the same chat prompt the
   student is trained and evaluated with;
3. every sample is judged by the task's verifier (``builtin_task.verify``: the last
   ``\\boxed{}`` against the sum) and the rows are written in the OpenR1-Math-Raw schema,
   exactly what ``redi prepare`` takes from the real data set.

Hypothesis (what the demo tests): the teacher's wrong samples are the mistakes a model of
this kind actually makes (a carry dropped where the model's attention slips, a digit sum
misread in long columns, a trace that stops early), concentrated on the steps the student
also finds hard; the injected slips of task "slips" are uniform over possible mistakes and
need not coincide with the student's own weak steps. If the negatives carry information,
pushing their tokens down (REDI's alpha term) should help the student beyond what more SFT
on the same correct traces gives.

An earlier checkpoint of the same run (``base_checkpoint``) is the student's starting point,
as the paper's student is a pretrained base model. Each teacher task's rows and base ship
with the package (``builtin_task.teacher_rows_path(task)``, ``builtin_task.base_model(task)``);
regenerate them with ``python -m redi.demo.teacher --task TASK`` (resumes an interrupted run
from ``--work``; ``SHIPPED`` holds each shipped teacher's settings).

* ``addition`` (verbose traces only): trained 400 steps in 4 data-parallel processes
  (``torchrun --nproc_per_node 4 -m redi.cli sft --config recipes/tiny_teacher.yaml
  data=WORK/rules output_dir=WORK/model max_steps=400 save_every=100 keep_last=1000
  micro_batch_size=16``, then this command with ``--work WORK``); one process trains an
  equivalent, not bit-identical, teacher. 51 % of its samples are wrong.
* ``styles`` (the default task): rule traces half verbose, half terse (``terse_share`` 0.5),
  1,200 steps in one process (interrupted at step 328 and resumed with one thread, so a
  rerun is equivalent, not bit-identical); base: step 400. Its samples (2026-12-04): 17.6 %
  wrong, verbose 50.9 % of samples with 5.1 % wrong, terse 49.1 % with 30.6 % wrong (6x),
  terse 41.4 % of the correct samples. Targets were: terse error at least twice verbose,
  terse 40-60 % of the correct samples, 30-60 % wrong overall; the last is missed. Tried
  (all T = 0.6): the same run's step 800 (43.1 % wrong, verbose 22.9 / terse 69.0 % wrong,
  terse 23.8 % of correct: too few terse positives) and 400 steps (91 % wrong); a 70 % terse
  run at step 1,000 (first 1,856 problems: 43.9 % wrong, but 83 % of the samples terse,
  verbose 30.3 / terse 46.7 % wrong: ratio 1.5, terse 78.5 % of correct). Sampling at
  T = 0.6 sharpens the majority style, so only a balanced mix keeps both styles common.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.resources
import json
import math
import shutil
import sys
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from redi.data import builtin_task

RECIPES = importlib.resources.files("redi.recipes")


@dataclass(frozen=True)
class TeacherSettings:
    task: str = "addition"  # one of builtin_task.TEACHER_TASKS
    terse_share: float = 0.0  # share of terse rule traces it learns from (task "styles")
    rule_problems: int = 20_000  # problems whose rule-generated correct trace it learns from
    steps: int = 400  # the run's SFT schedule (linear decay to 0); the teacher is its end
    base_checkpoint: int = 200  # the student's starting point: an earlier checkpoint
    problems: int = builtin_task.DEFAULT_PROBLEMS  # training problems sampled
    generations: int = 4  # samples per problem
    temperature: float = 0.6
    max_new_tokens: int = 160
    seed: int = 0
    batch_size: int = 256


# The shipped teachers' settings (see the module docstring for how each was chosen).
SHIPPED = {"addition": TeacherSettings(),
           "styles": TeacherSettings(task="styles", terse_share=0.5, steps=1200,
                                     base_checkpoint=400)}


def train_teacher(work: Path, settings: TeacherSettings) -> Path:
    """Train (or finish training) the teacher run in ``work``; exports its base and teacher
    checkpoints to ``work/step_N``; returns the teacher's."""
    from redi.data.formatting import Formatter
    from redi.data.prepare import PrepareOptions, prepare_builtin_task
    from redi.data.tokenizer import load_tokenizer
    from redi.train.checkpoint import checkpoint_root
    from redi.train.config import build_config
    from redi.train.export import export_checkpoint
    from redi.train.loop import train

    rules = work / "rules"
    if not (rules / "stats.json").is_file():  # sft.jsonl: the correct trace of each problem
        prepare_builtin_task(rules, Formatter(load_tokenizer()), settings.rule_problems, 1,
                             settings.seed + 1, PrepareOptions(progress=False), task="slips",
                             column_error=0.0, generations=1, num_validation=1,
                             terse_share=settings.terse_share if settings.task == "styles" else 0)
    run = work / "model"
    wanted = [checkpoint_root(run) / f"step_{step:08d}"
              for step in (settings.base_checkpoint, settings.steps)]
    if not all(path.is_dir() for path in wanted):
        train(build_config(RECIPES / "tiny_teacher.yaml", [
            f"data={rules}", f"output_dir={run}", f"max_steps={settings.steps}",
            f"seed={settings.seed}", "resume=auto", "progress=false",
            f"save_every={math.gcd(settings.base_checkpoint, settings.steps)}",
            "keep_last=1000"]))
    missing = [path.name for path in wanted if not path.is_dir()]
    if missing:  # a stop signal ends training early with a checkpoint: rerun to go on
        raise RuntimeError(f"the teacher run in {run} stopped before {missing[0]}; rerun the "
                           "same command to continue it")
    for path in wanted:
        if not (work / path.name / "config.json").is_file():
            export_checkpoint(path, work / path.name)
    return work / wanted[1].name


def _finished_lines(path: Path) -> list[str]:
    """Complete lines of an interrupted samples file (a cut last line is dropped)."""
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    return [line for line in lines if line.endswith("\n")]


def sample_rows(model_dir: Path, samples_path: Path, settings: TeacherSettings) -> list[dict]:
    """Sample ``settings.generations`` traces per training problem from the teacher, verify
    them, and append the OpenR1 rows to ``samples_path`` (a rerun continues after the last
    finished row). A sample's draw depends on its seed only, so reruns agree."""
    from redi.data.formatting import THINK_PREFIX, Formatter
    from redi.data.tokenizer import load_tokenizer
    from redi.eval.generation import HFGenerator, SamplingSettings, sample_seed
    from redi.files import atomic_write_text

    operands = list(builtin_task.train_operands(settings.problems, settings.seed + 2))
    done = _finished_lines(samples_path)
    atomic_write_text(samples_path, "".join(done))
    formatter = Formatter(load_tokenizer(str(model_dir)))
    generator = HFGenerator(str(model_dir), settings.batch_size)
    sampling = SamplingSettings(temperature=settings.temperature, top_p=1.0,
                                max_new_tokens=settings.max_new_tokens)
    per_batch = max(1, settings.batch_size // settings.generations)
    with samples_path.open("a") as f:
        for start in range(len(done), len(operands), per_batch):
            chunk = list(enumerate(operands[start:start + per_batch], start))
            prompts = [formatter.generation_prompt(builtin_task.problem_text(ops))
                       for _, ops in chunk for _ in range(settings.generations)]
            seeds = [sample_seed(settings.seed, f"teacher-{i}", j)
                     for i, _ in chunk for j in range(settings.generations)]
            texts = generator.generate(prompts, sampling, seeds, formatter.stop_token_ids)
            for k, (i, ops) in enumerate(chunk):
                traces = [THINK_PREFIX + t for t in
                          texts[k * settings.generations:(k + 1) * settings.generations]]
                row_uuid = str(uuid.UUID(int=sample_seed(settings.seed, f"uuid-{i}", 0)))
                f.write(json.dumps(builtin_task.openr1_row(ops, traces, row_uuid)) + "\n")
            f.flush()
    return [json.loads(line) for line in samples_path.open()]


def error_rates(rows: list[dict]) -> dict:
    """Share of wrong samples, and of problems with at least one correct and one wrong; for
    rows with ``styles``: each style's share of the samples, its error rate (wrong samples of
    that style / samples of that style) and the terse share of the correct samples."""
    verdicts = [r["correctness"]["math_verify_answer"] for r in rows]
    flat = [v for vs in verdicts for v in vs]
    rates = {"problems": len(rows), "samples": len(flat),
             "wrong_samples": round(1 - sum(flat) / len(flat), 4),
             "mixed_problems": round(sum(any(v) and not all(v) for v in verdicts) / len(rows), 4),
             "all_wrong_problems": round(sum(not any(v) for v in verdicts) / len(rows), 4)}
    if not all("styles" in r for r in rows):
        return rates
    styles = [s for r in rows for s in r["styles"]]
    names = (*builtin_task.STYLES, builtin_task.OTHER_STYLE)
    counts = {n: sum(s == n for s in styles) for n in names}
    wrong = {n: sum(s == n and not ok for s, ok in zip(styles, flat, strict=True)) for n in names}
    correct = [s for s, ok in zip(styles, flat, strict=True) if ok]
    return rates | {
        "style_share": {n: round(counts[n] / len(styles), 4) for n in names},
        "error_rate_by_style": {n: round(wrong[n] / counts[n], 4) if counts[n] else None
                                for n in names},
        "terse_share_of_correct": round(correct.count("terse") / max(1, len(correct)), 4)}


def save_base(model_dir: Path, output: Path) -> None:
    """The base checkpoint in bf16 (half the bytes; training upcasts to fp32), with its
    tokenizer, written to a temporary sibling and renamed."""
    import torch
    from transformers import AutoModelForCausalLM

    from redi.data.tokenizer import load_tokenizer

    tmp = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                 local_files_only=True)
    model.save_pretrained(tmp)
    load_tokenizer(str(model_dir)).save_pretrained(tmp)
    shutil.rmtree(output, ignore_errors=True)
    tmp.rename(output)


def build_teacher_rows(output: Path, work: Path, settings: TeacherSettings,
                       base_output: Path | None = None) -> dict:
    """The whole pipeline; writes ``output`` (gzip JSON lines) and, when given,
    ``base_output`` (the student's starting point); returns the error rates."""
    from redi.files import atomic_path

    work.mkdir(parents=True, exist_ok=True)
    model_dir = train_teacher(work, settings)
    rows = sample_rows(model_dir, work / "samples.jsonl", settings)
    with atomic_path(output) as tmp, gzip.GzipFile(tmp, "wb", mtime=0) as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows).encode())
    if base_output is not None:
        save_base(work / f"step_{settings.base_checkpoint:08d}", base_output)
    return error_rates(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m redi.demo.teacher",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=builtin_task.TEACHER_TASKS,
                        default=builtin_task.DEFAULT_TASK)
    parser.add_argument("--output", type=Path, default=None,
                        help="the rows (default: the task's shipped file)")
    parser.add_argument("--base-output", type=Path, default=None,
                        help="where the student's starting point (bf16) is written "
                             "(default: the task's shipped base)")
    parser.add_argument("--work", type=Path, default=None,
                        help="the teacher's data, checkpoints and samples (reruns resume; "
                             "default runs/teacher-TASK)")
    parser.add_argument("--terse-share", type=float, default=None,
                        help="task styles: share of terse rule traces the teacher learns from "
                             "(default: the shipped teacher's)")
    parser.add_argument("--problems", type=int, default=None,
                        help="training problems sampled (default: the shipped teacher's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="the teacher's SFT steps (default: the shipped teacher's)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature (default: the shipped teacher's)")
    args = parser.parse_args(argv)
    chosen = {k: v for k, v in (("problems", args.problems), ("steps", args.steps),
                                ("temperature", args.temperature),
                                ("terse_share", args.terse_share)) if v is not None}
    settings = replace(SHIPPED[args.task], **chosen)
    if settings.problems < 1 or settings.steps <= settings.base_checkpoint \
            or settings.temperature <= 0 or not 0 <= settings.terse_share <= 1:
        parser.error(f"need --problems >= 1, --steps > {settings.base_checkpoint} (the base "
                     "checkpoint), --temperature > 0 and --terse-share in [0, 1]")
    output = args.output or builtin_task.teacher_rows_path(args.task)
    rates = build_teacher_rows(output, args.work or Path(f"runs/teacher-{args.task}"), settings,
                               args.base_output or builtin_task.base_model(args.task))
    print(f"wrote {output}: {json.dumps(rates)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
