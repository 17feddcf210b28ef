"""The built-in task: column addition with step-by-step "teacher" traces.

Each problem asks for the sum of 2 or 3 whole numbers of 1 to 3 digits
("Compute 358 + 274."). A teacher trace works column by column, right to left, and
ends with the answer in ``\\boxed{}``::

    <think>
    units: 8 + 4 = 12, write 2, carry 1
    tens: 5 + 7 + 1 = 13, write 3, carry 1
    hundreds: 3 + 2 + 1 = 6, write 6
    </think>
    \\boxed{632}

An incorrect trace makes exactly one realistic mistake in one column and then carries on
correctly from the wrong state, so it differs from the correct trace in a few steps:

* ``slip``: a single-digit sum is off by one or two (``8 + 4 = 11``);
* ``dropped_term``: a digit of one operand is left out of a column (``5 + 1 = 6``);
* ``forgot_carry``: the carry announced by the previous column is not added;
* ``dropped_carry``: a column's carry is never written down, so it is lost.

A trace comes in one of two styles (``STYLES``): *verbose*, above, writes each column's
terms and sum; *terse* writes only what each column puts down (``units: write 2, carry 1``),
so the sums are done "in the head". ``trace_style`` tells them apart from the text (the one
place a trace's style is judged: data statistics and evaluation both use it).

Every mistake changes the final answer. A trace of c columns is wrong with probability
``1 - (1 - column_error) ** c`` (its one mistake drawn uniformly from those possible), so
longer sums are wrong more often; with the defaults about 43% of the traces are wrong.

Rows follow the OpenR1-Math-Raw schema (``problem``, ``answer``, ``generations``,
``correctness`` with the three verdict lists, ``problem_is_valid``, ``source``, ``uuid``);
the verdicts all equal the answer check. Problems are split into train and test by a hash
of the operands, so the held-out split never shares a problem with the training rows
whatever the sizes and seeds. The held-out split comes as problems with answers
(``test.jsonl``: ``id``, ``problem``, ``answer``) and as correct/incorrect trace pairs
(``test_pairs.jsonl``). ``check_answer`` is the task's answer checker (last ``\\boxed{}``,
whole numbers compared after normalization).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from redi.grading.answers import is_correct

SOURCE = "builtin_addition"
COLUMN_NAMES = ("units", "tens", "hundreds", "thousands")
MISTAKES = ("slip", "dropped_term", "forgot_carry", "dropped_carry")
SPLIT_SHARE = 10  # by operand hash: residue 0 -> test, 1 -> validation, the rest -> train
HELD_OUT_SPLITS = ("test", "validation")
# The built-in tasks: a teacher model's verified samples in two styles of unequal reliability
# (the default) | a teacher model's verified samples in one style | injected slips.
TASKS = ("styles", "addition", "slips")
DEFAULT_TASK = "styles"
TEACHER_TASKS = ("styles", "addition")  # tasks whose rows are a shipped teacher's samples
STYLES = ("verbose", "terse")
OTHER_STYLE = "other"  # a trace whose first column line is in neither style
# The one place the built-in task's size is set (the trainer's data=builtin, `redi prepare
# --builtin` and `redi demo` all read these).
DEFAULT_PROBLEMS = 2000  # training problems (4 teacher traces each)
DEFAULT_TEST = 400  # held-out test problems (and test pairs)
DEFAULT_VALIDATION = 200  # held-out validation problems (model and learning-rate selection)


@dataclass(frozen=True)
class Column:
    """One line of a trace: the digits summed in a column and what is written."""

    name: str
    terms: tuple[int, ...]  # operand digits, then the incoming carry when it is added
    total: int
    write: int
    carry: int  # the carry written on this line (0: none written)


def problem_text(operands: tuple[int, ...]) -> str:
    """The problem statement for a sum."""
    return "Compute " + " + ".join(map(str, operands)) + "."


def split_of(operands: tuple[int, ...]) -> str:
    """The split a problem belongs to, "train", "validation" or "test", by a fixed hash of
    its operands (so the splits never share a problem whatever the sizes and seeds)."""
    digest = hashlib.blake2b(repr(operands).encode(), digest_size=8).digest()
    residue = int.from_bytes(digest, "little") % SPLIT_SHARE
    return HELD_OUT_SPLITS[residue] if residue < len(HELD_OUT_SPLITS) else "train"


def sample_operands(rng: random.Random, max_operands: int = 3, max_digits: int = 3) -> tuple:
    """Draw 2..max_operands numbers of 1..max_digits digits (digit counts drawn first)."""
    if not (2 <= max_operands and 1 <= max_digits <= len(COLUMN_NAMES)):
        raise ValueError(f"the built-in task needs max_operands >= 2 and 1 <= max_digits <= "
                         f"{len(COLUMN_NAMES)}")
    count = rng.randint(2, max_operands)
    digits = [rng.randint(1, max_digits) for _ in range(count)]
    return tuple(rng.randint(10 ** (d - 1) if d > 1 else 0, 10**d - 1) for d in digits)


@dataclass(frozen=True)
class Mistake:
    """One teacher error: ``kind`` in MISTAKES, in ``column`` (0 = units); ``detail`` is the
    slip's error (+-1, +-2) or the index of the dropped operand digit."""

    kind: str
    column: int
    detail: int = 0


def column_digits(operands: tuple[int, ...], column: int) -> list[int]:
    """The digits operands contribute to a column (shorter numbers contribute none)."""
    return [n // 10**column % 10 for n in operands if column == 0 or n >= 10**column]


def solve(operands: tuple[int, ...], mistake: Mistake | None = None) -> list[Column]:
    """Column-by-column solution, with at most one injected mistake."""
    width = len(str(max(operands)))
    columns = []
    carry_in = 0
    for j in range(width):
        digits = column_digits(operands, j)
        kind = mistake.kind if mistake and mistake.column == j else None
        if kind == "dropped_term":
            del digits[mistake.detail]
        terms = tuple(digits) + ((carry_in,) if carry_in and kind != "forgot_carry" else ())
        total = sum(terms) + (mistake.detail if kind == "slip" else 0)
        last = j == width - 1
        write = total if last else total % 10
        carry = 0 if last or kind == "dropped_carry" else total // 10
        columns.append(Column(COLUMN_NAMES[j], terms, total, write, carry))
        carry_in = carry
    return columns


def possible_mistakes(operands: tuple[int, ...]) -> list[Mistake]:
    """Every single mistake that changes the final answer for these operands."""
    correct = solve(operands)
    options = []
    for j, col in enumerate(correct):
        carry_in = correct[j - 1].carry if j else 0
        options += [Mistake("slip", j, d) for d in (-2, -1, 1, 2) if col.total + d >= 0]
        digits = column_digits(operands, j)
        if len(digits) >= 2:
            options += [Mistake("dropped_term", j, i) for i, d in enumerate(digits) if d]
        if carry_in:
            options.append(Mistake("forgot_carry", j))
        if col.carry:
            options.append(Mistake("dropped_carry", j))
    return options


def answer_of(columns: list[Column]) -> str:
    """The number the written digits spell, most significant column first."""
    return "".join(str(c.write) for c in reversed(columns))


def render_trace(columns: list[Column], style: str = "verbose") -> str:
    """The teacher's text for a column solution, in one of ``STYLES``."""
    if style not in STYLES:
        raise ValueError(f"unknown trace style {style!r}; choose one of {', '.join(STYLES)}")
    lines = []
    for c in columns:
        sum_text = f"{' + '.join(map(str, c.terms))} = {c.total}, " if style == "verbose" else ""
        line = f"{c.name}: {sum_text}write {c.write}"
        lines.append(line + (f", carry {c.carry}" if c.carry else ""))
    return "<think>\n" + "\n".join(lines) + "\n</think>\n\\boxed{" + answer_of(columns) + "}"


_FIRST_COLUMN = re.compile(rf"{COLUMN_NAMES[0]}: (?:(write)|\d+(?: \+ \d+)* = \d+, write)")


def trace_style(text: str) -> str:
    """The style of a trace or model output: "verbose" or "terse" by its first column line
    (where a writer commits to a style: ``units: 8 + 4 = 12, write`` or ``units: write``),
    ``OTHER_STYLE`` when that line is in neither."""
    match = _FIRST_COLUMN.search(text)
    if match is None:
        return OTHER_STYLE
    return "terse" if match.group(1) else "verbose"


def teacher_trace(rng: random.Random, operands: tuple[int, ...], column_error: float,
                  terse_share: float = 0.0) -> str:
    """One teacher generation: terse with probability ``terse_share`` (no draw when it is 0,
    so the verbose-only streams stay as they were), at most one mistake, each column erring
    with column_error."""
    style = "terse" if terse_share and rng.random() < terse_share else "verbose"
    width = len(str(max(operands)))
    if rng.random() >= 1 - (1 - column_error) ** width:
        return render_trace(solve(operands), style)
    return render_trace(solve(operands, rng.choice(possible_mistakes(operands))), style)


def train_operands(num_problems: int, seed: int = 0, max_operands: int = 3,
                   max_digits: int = 3, rng: random.Random | None = None,
                   excluded: tuple[str, ...] = HELD_OUT_SPLITS) -> Iterator[tuple[int, ...]]:
    """Operand tuples outside the ``excluded`` splits (repeats possible), in a fixed order
    for the seed (or drawn from ``rng`` when given)."""
    rng = rng or random.Random(seed)
    for _ in range(num_problems):
        operands = sample_operands(rng, max_operands, max_digits)
        while split_of(operands) in excluded:
            operands = sample_operands(rng, max_operands, max_digits)
        yield operands


def openr1_row(operands: tuple[int, ...], traces: list[str], row_uuid: str) -> dict:
    """One row in the OpenR1-Math-Raw schema; the verdicts all equal ``verify``; ``styles``
    (an extra field) holds each trace's ``trace_style``."""
    answer = str(sum(operands))
    verdicts = [verify(t, answer) for t in traces]
    return {
        "problem": problem_text(operands),
        "answer": answer,
        "generations": traces,
        "styles": [trace_style(t) for t in traces],
        "correctness": {
            "llama_verification": verdicts,
            "math_verify_answer": list(verdicts),
            "math_verify_reparsed_answer": list(verdicts),
        },
        "problem_is_valid": "Yes",
        "source": SOURCE,
        "uuid": row_uuid,
    }


def generate_rows(num_problems: int, seed: int = 0, generations: int = 4,
                  column_error: float = 0.2, max_operands: int = 3, max_digits: int = 3,
                  excluded: tuple[str, ...] = HELD_OUT_SPLITS,
                  terse_share: float = 0.0) -> Iterator[dict]:
    """Injected-slip training rows in the OpenR1-Math-Raw schema (never a problem of the
    ``excluded`` splits); ``column_error=0`` gives rule-generated correct traces only, a
    share ``terse_share`` of them terse."""
    rng = random.Random(seed)
    for operands in train_operands(num_problems, max_operands=max_operands,
                                   max_digits=max_digits, rng=rng, excluded=excluded):
        traces = [teacher_trace(rng, operands, column_error, terse_share)
                  for _ in range(generations)]
        yield openr1_row(operands, traces, str(uuid.UUID(int=rng.getrandbits(128))))


def held_out_operands(num_problems: int, seed: int = 0, split: str = "test",
                      max_operands: int = 3, max_digits: int = 3) -> list[tuple[int, ...]]:
    """Distinct operand tuples of a held-out split, in a fixed order for the seed."""
    if split not in HELD_OUT_SPLITS:
        raise ValueError(f"split must be one of {HELD_OUT_SPLITS}, not {split!r}")
    rng = random.Random(f"{split}-{seed}")
    found: dict[tuple[int, ...], None] = {}
    misses = 0
    while len(found) < num_problems:
        operands = sample_operands(rng, max_operands, max_digits)
        if operands in found or split_of(operands) != split:
            misses += 1
            if misses > 100 * num_problems + 10_000:
                raise ValueError(f"cannot find {num_problems} distinct {split} problems with "
                                 f"at most {max_operands} operands of {max_digits} digits")
            continue
        found[operands] = None
    return list(found)


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def generate_test(num_problems: int, seed: int = 0, max_operands: int = 3,
                  max_digits: int = 3, split: str = "test") -> list[dict]:
    """Distinct held-out problems of a split: ``id``, ``problem``, ``answer``."""
    return [{"id": f"builtin-{split}-{i:05d}", "problem": problem_text(ops),
             "answer": str(sum(ops))}
            for i, ops in enumerate(held_out_operands(num_problems, seed, split, max_operands,
                                                      max_digits))]


def generate_test_pairs(num_problems: int, seed: int = 0, max_operands: int = 3,
                        max_digits: int = 3) -> list[dict]:
    """The held-out problems (same ids as ``generate_test``) as preference rows: ``prompt``,
    ``chosen`` (the correct trace), ``rejected`` (a trace with one random mistake, whose
    kind is in ``mistake``) and ``answer``; for measuring how a model ranks correct and
    incorrect traces of unseen problems (``tokenized.load_pairs`` reads them)."""
    rng = random.Random(f"test-pairs-{seed}")
    rows = []
    for i, ops in enumerate(held_out_operands(num_problems, seed, "test", max_operands,
                                              max_digits)):
        mistake = rng.choice(possible_mistakes(ops))
        rows.append({"id": f"builtin-test-{i:05d}", "prompt": _user(problem_text(ops)),
                     "chosen": _assistant(render_trace(solve(ops))),
                     "rejected": _assistant(render_trace(solve(ops, mistake))),
                     "answer": str(sum(ops)), "mistake": mistake.kind})
    return rows


def _write_jsonl(path: Path, rows) -> Path:
    with path.open("w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def teacher_rows_path(task: str) -> Path:
    """The shipped teacher samples of a teacher task (``python -m redi.demo.teacher --task
    TASK`` regenerates them)."""
    return Path(__file__).parent / f"builtin-{task}-teacher.jsonl.gz"


def base_model(task: str) -> Path:
    """The student's starting point for a task: an early checkpoint of its teacher's run
    (task "slips" has no teacher model of its own and starts from "addition"'s)."""
    return Path(__file__).parent / f"builtin-{task if task in TEACHER_TASKS else 'addition'}-base"


def teacher_rows(num_problems: int, task: str = DEFAULT_TASK,
                 path: str | Path | None = None) -> list[dict]:
    """The first ``num_problems`` rows sampled from a task's teacher model (shipped with the
    package unless ``path`` is given). Task "styles" needs every row's ``styles`` (one of
    ``STYLES`` or ``OTHER_STYLE`` per generation)."""
    path = Path(path) if path is not None else teacher_rows_path(task)
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(num_problems))]
    if len(rows) < num_problems:
        raise ValueError(f"{path} holds {len(rows)} teacher rows, fewer than the "
                         f"{num_problems} asked for")
    if task == "styles":
        for number, row in enumerate(rows, 1):
            styles = row.get("styles")
            if (not isinstance(styles, list) or len(styles) != len(row.get("generations", ()))
                    or any(s not in (*STYLES, OTHER_STYLE) for s in styles)):
                raise ValueError(f"{path} row {number}: field 'styles' must list one of "
                                 f"{', '.join((*STYLES, OTHER_STYLE))} per generation, got "
                                 f"{styles!r}")
    return rows


def write_task(output_dir: str | Path, num_problems: int = DEFAULT_PROBLEMS,
               num_test: int = DEFAULT_TEST, seed: int = 0, task: str = DEFAULT_TASK,
               num_validation: int = DEFAULT_VALIDATION, **task_options) -> dict[str, Path]:
    """Write the task into output_dir: ``raw.jsonl`` (training rows, OpenR1 schema: the
    teacher model's samples for a task of ``TEACHER_TASKS``, injected slips for "slips"),
    ``test.jsonl`` and ``validation.jsonl`` (held-out problems) and ``test_pairs.jsonl``
    (held-out pairs); returns their paths under "raw", "test", "validation", "test_pairs"."""
    if task not in TASKS:
        raise ValueError(f"unknown built-in task {task!r}; choose one of {', '.join(TASKS)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    sizes = {k: v for k, v in task_options.items() if k in ("max_operands", "max_digits")}
    rows = (teacher_rows(num_problems, task) if task in TEACHER_TASKS
            else generate_rows(num_problems, seed, **task_options))
    return {
        "raw": _write_jsonl(output_dir / "raw.jsonl", rows),
        "test": _write_jsonl(output_dir / "test.jsonl", generate_test(num_test, seed, **sizes)),
        "validation": _write_jsonl(output_dir / "validation.jsonl",
                                   generate_test(num_validation, seed, split="validation",
                                                 **sizes)),
        "test_pairs": _write_jsonl(output_dir / "test_pairs.jsonl",
                                   generate_test_pairs(num_test, seed, **sizes)),
    }


def check_answer(completion: str, answer: str) -> bool:
    """Whether the completion's last boxed answer equals the reference answer: the exact
    grader of ``redi.grading.is_correct``, the one the evaluation of this task uses."""
    return is_correct(completion, answer, grader="exact")


def verify(trace: str, answer: str) -> bool:
    """The task's verifier: the verdict written into every row's ``correctness`` (the one
    place a teacher sample is judged)."""
    return check_answer(trace, answer)
