"""The ``redi prepare`` pipeline: raw rows to ``sft.jsonl``, ``pairs.jsonl``, ``stats.json``.

Inputs are OpenR1-Math-Raw rows (the paper's rules, ``openr1.py``) or TRL conversational
rows (``messages``, or ``prompt``/``chosen``/``rejected``), read with ``io.read_rows``.
The format is detected from the first record unless given.

Outputs are written into ``OUT/.prepare.tmp/`` and moved into ``OUT`` together once all
are complete (``stats.json`` last). A previous run's outputs are first moved to
``OUT/.prepare-previous/`` (removed when the new run succeeds), so a run that fails leaves
no output that looks current, and loses nothing; it removes ``.prepare.tmp`` (a full disk is
one line). ``OUT`` is locked for the run (``OUT/.lock``, as a training run locks its own),
so a second prepare on it is refused:

* ``sft.jsonl`` (OpenR1 and ``messages`` inputs): ``messages`` (user = the problem,
  assistant = the trace), plus provenance: ``source``, ``uuid``, ``row`` ("file:row"),
  ``generation`` (index of the trace) and ``answer`` when the input has them;
* ``pairs.jsonl`` (OpenR1 and preference inputs): ``prompt``, ``chosen``, ``rejected``
  message lists, plus ``source``, ``uuid``, ``row``, ``chosen_generation``,
  ``rejected_generation`` (and ``answer``). A pair whose chosen and rejected completions
  are the same teaches no preference: it is counted (``identical_completions``) and dropped
  unless ``drop_identical_pairs`` is off; a set where every pair is such is an error;
* ``stats.json``: rows read / invalid (per reason) / filtered (per rule, including
  ``duplicate_problem``: an OpenR1 problem seen before; the first is kept) / kept, SFT rows
  and pairs written and dropped per reason, files of an input directory skipped for their
  type, and token-length percentiles.

A file of an input directory whose rows are of another format than the run's is an error
naming it; the tokenizer must give the first rows' text back (``check_round_trip``).

OpenR1 rows are written in the order of the seed-42 shuffle of the kept problems; TRL rows
in input order. Token lengths (for the pair limits and the statistics) are counted with the
formatter's tokenizer and chat template, untruncated. A response is counted as the public
code of the paper counts it: the response rendered alone through the chat template (with
the system block the template adds) plus one token, i.e. its trained tokens plus the
template's overhead (``response_count_extra``, recorded in ``stats.json``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import mmap
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from redi.data import openr1
from redi.data.errors import DataError, InvalidRows
from redi.data.formatting import Encoded, Formatter
from redi.data.io import Row, count_rows, read_rows, skipped_files
from redi.data.tokenizer import check_round_trip, string_values
from redi.data.validation import (
    FORMATS,
    check_some_preference,
    detect_format,
    messages_row,
    openr1_row,
    preference_row,
)
from redi.files import full_disk_reported
from redi.run_lock import RunLock

PROGRESS_MIN_ROWS = 10_000
OUTPUTS = {"openr1": ("sft", "pairs"), "messages": ("sft",), "preference": ("pairs",)}
PARSERS = {"openr1": openr1_row, "messages": messages_row, "preference": preference_row}


@dataclass(frozen=True)
class PrepareOptions:
    """Options of ``prepare`` (a None token limit: no limit)."""

    input_format: str = "auto"
    skip_invalid: bool = False
    shuffle_seed: int = openr1.SHUFFLE_SEED
    dropped_sources: tuple[str, ...] = openr1.DROPPED_SOURCES
    max_prompt_tokens: int | None = openr1.MAX_PROMPT_TOKENS
    max_response_tokens: int | None = openr1.MAX_RESPONSE_TOKENS
    progress: bool = True
    chunk_size: int = 1024
    drop_duplicate_problems: bool = True  # OpenR1 rows: keep the first row of a problem
    drop_identical_pairs: bool = True  # a pair whose chosen and rejected are the same


class _Spool:
    """JSON lines stored under integer keys in arrival order, then copied out in any order."""

    def __init__(self, directory: Path):
        self.file = tempfile.TemporaryFile(dir=directory)
        self.spans: dict[int, tuple[int, int]] = {}
        self.size = 0

    def add(self, key: int, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        self.spans[key] = (self.size, len(data))
        self.file.write(data)
        self.size += len(data)

    def write(self, path: Path, order: Iterable[int]) -> None:
        """Write the stored lines whose keys are in ``order``, in that order; then close."""
        self.file.flush()
        with self.file, open(path, "wb") as out:
            if not self.size:
                return
            with mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                for key in order:
                    if key in self.spans:
                        start, length = self.spans[key]
                        out.write(data[start:start + length])


def _percentiles(values: list[int]) -> dict:
    if not values:
        return {"count": 0}
    a = np.asarray(values)
    stats = {"count": len(values), "mean": round(float(a.mean()), 2), "min": int(a.min())}
    stats.update({f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 95, 99)})
    return stats | {"max": int(a.max())}


def response_count_extra(formatter: Formatter) -> int:
    """Tokens the paper's public code counts in a response beyond the trained ones
    (content + end-of-turn): it counts the response rendered alone through the chat
    template (system block, role header, the newline after the turn) plus one."""
    probe = "1"
    rendered = formatter.render([_assistant(probe)])
    ids = formatter.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    content = formatter.tokenizer(probe, add_special_tokens=False)["input_ids"]
    return len(ids) + 1 - (len(content) + 1)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


class _Preparer:
    """One run: parses rows, keeps the outputs in spools, and counts everything."""

    def __init__(self, fmt: str, formatter: Formatter, options: PrepareOptions,
                 directory: Path):
        self.fmt, self.formatter, self.options = fmt, formatter, options
        self.spools = {name: _Spool(directory) for name in OUTPUTS[fmt]}
        self.read, self.kept, self.null_verdicts = 0, 0, 0
        self.problems: set[bytes] = set()  # digests of the OpenR1 problems kept so far
        self.files_seen: set[str] = set()
        self.skipped_files: list[str] = []
        self.invalid = InvalidRows(options.skip_invalid)
        self.filtered: Counter[str] = Counter()
        self.response_extra = response_count_extra(formatter)
        self.dropped = {"sft": Counter(), "pairs": Counter()}
        self.pairs_seen, self.identical_pairs = 0, 0
        self.lengths = {"sft": {"prompt": [], "response": [], "total": []},
                        "pairs": {"prompt": [], "chosen": [], "rejected": []}}

    def parse(self, items: Iterable[Row | DataError]) -> Iterator[tuple[Row, object]]:
        """Valid rows with their parsed form; bad ones raised or counted. OpenR1 rows meet
        the source and validity filters first (``openr1.filter_reason``)."""
        for item in items:
            self.read += 1
            if isinstance(item, Row) and item.file not in self.files_seen:
                self.first_row_of_file(item)
            try:
                if isinstance(item, DataError):
                    raise item
                if self.fmt == "openr1" and isinstance(item.data, dict):
                    reason = openr1.filter_reason(item.data, self.options.dropped_sources)
                    if reason:
                        self.filtered[reason] += 1
                        continue
                yield item, PARSERS[self.fmt](item)
            except DataError as error:
                self.invalid.reject(error)

    def first_row_of_file(self, row: Row) -> None:
        """A file of another format than the run's is named (always an error: under
        --skip-invalid its rows would all be dropped as 'missing field'); the tokenizer
        must give the first file's text back."""
        found = detect_format(row.data)
        if found is not None and found != self.fmt:
            raise DataError(row.file, row.number, None, "other_format",
                            f"this file holds {found} rows, but this run prepares {self.fmt} "
                            "rows (from the first file or --format): prepare it separately")
        if not self.files_seen:
            check_round_trip(self.formatter.tokenizer, string_values(row.data))
        self.files_seen.add(row.file)

    def add(self, chunk: list[tuple[Row, object]]) -> None:
        """Turn a chunk of parsed rows into output records."""
        {"openr1": self.add_openr1_rows, "messages": self.add_messages_rows,
         "preference": self.add_preference_rows}[self.fmt](chunk)

    def add_sft(self, key: int, record: dict, e: Encoded) -> None:
        self.spools["sft"].add(key, record)
        for name, n in (("prompt", e.prompt_length), ("response", e.completion_length),
                        ("total", len(e.input_ids))):
            self.lengths["sft"][name].append(n)

    def add_pair(self, key: int, record: dict, chosen: Encoded, rejected: Encoded) -> None:
        self.pairs_seen += 1
        if record["chosen"] == record["rejected"]:
            self.identical_pairs += 1
            if self.options.drop_identical_pairs:
                self.dropped["pairs"]["identical_completions"] += 1
                return
        counts = (chosen.prompt_length, chosen.completion_length + self.response_extra,
                  rejected.completion_length + self.response_extra)
        reason = openr1.pair_length_reason(*counts, self.options.max_prompt_tokens,
                                           self.options.max_response_tokens)
        if reason:
            self.dropped["pairs"][reason] += 1
            return
        self.spools["pairs"].add(key, record)
        for name, n in zip(("prompt", "chosen", "rejected"), counts, strict=True):
            self.lengths["pairs"][name].append(n)

    def add_openr1_rows(self, chunk: list[tuple[Row, object]]) -> None:
        todo = []
        for row, r in chunk:
            digest = hashlib.blake2b(r.problem.encode(), digest_size=16).digest()
            duplicate = self.options.drop_duplicate_problems and digest in self.problems
            self.problems.add(digest)
            if duplicate:  # the source and validity filters ran in parse()
                self.filtered["duplicate_problem"] += 1
                continue
            self.null_verdicts += sum(v is None for v in r.llama_verification) + sum(
                v is None for v in r.math_verify_reparsed_answer)
            todo.append((self.kept, row, r, *openr1.first_traces(r)))
            self.kept += 1
        conversations = [([_user(r.problem), _assistant(r.generations[g])], 1)
                         for _, _, r, c, i in todo for g in (c, i) if g is not None]
        encoded = iter(self.formatter.encode_conversations(conversations))
        for key, row, r, c, i in todo:
            e_chosen = next(encoded) if c is not None else None
            e_rejected = next(encoded) if i is not None else None
            origin = {"source": r.source, "uuid": r.uuid, "row": f"{row.file}:{row.number}"}
            origin |= {"answer": r.answer} if r.answer is not None else {}
            if c is None:
                self.dropped["sft"]["no_correct_trace"] += 1
                self.dropped["pairs"]["no_correct_trace"] += 1
                continue
            messages = [_user(r.problem), _assistant(r.generations[c])]
            self.add_sft(key, {"messages": messages, **origin, "generation": c}, e_chosen)
            if i is None:
                self.dropped["pairs"]["no_incorrect_trace"] += 1
                continue
            record = {"prompt": messages[:1], "chosen": messages[1:],
                      "rejected": [_assistant(r.generations[i])], **origin,
                      "chosen_generation": c, "rejected_generation": i}
            self.add_pair(key, record, e_chosen, e_rejected)

    def add_messages_rows(self, chunk: list[tuple[Row, list]]) -> None:
        encoded = self.formatter.encode_conversations([(m, 0) for _, m in chunk])
        for (row, messages), e in zip(chunk, encoded, strict=True):
            self.add_sft(self.kept, {"messages": messages, "row": f"{row.file}:{row.number}"}, e)
            self.kept += 1

    def add_preference_rows(self, chunk: list[tuple[Row, tuple]]) -> None:
        encoded = iter(self.formatter.encode_conversations(
            [(p + answer, len(p)) for _, (p, c, r) in chunk for answer in (c, r)]))
        for row, (prompt, chosen, rejected) in chunk:
            record = {"prompt": prompt, "chosen": chosen, "rejected": rejected,
                      "row": f"{row.file}:{row.number}"}
            self.add_pair(self.kept, record, next(encoded), next(encoded))
            self.kept += 1

    def stats(self, input_path, started: float) -> dict:
        outputs = OUTPUTS[self.fmt]
        stats = {
            "input": str(input_path),
            "format": self.fmt,
            "tokenizer": getattr(self.formatter.tokenizer, "name_or_path", None),
            "options": {k: v for k, v in dataclasses.asdict(self.options).items()
                        if k not in ("progress", "chunk_size")},
            "rows": {"read": self.read, "invalid": sum(self.invalid.counts.values()),
                     "filtered": sum(self.filtered.values()), "kept": self.kept},
            "invalid": dict(self.invalid.counts),
            "filtered": dict(self.filtered),
            "null_verdicts": self.null_verdicts,
            "response_count_extra": self.response_extra,
            "skipped_files": self.skipped_files,
        }
        for name in outputs:
            stats[name] = {"written": len(self.spools[name].spans),
                           "dropped": dict(self.dropped[name])}
        if "pairs" in outputs:
            stats["pairs"]["identical_completions"] = self.identical_pairs
        stats["token_lengths"] = {name: {k: _percentiles(v) for k, v in self.lengths[name].items()}
                                  for name in outputs}
        return stats | {"seconds": round(time.perf_counter() - started, 3)}

    def write(self, directory: Path) -> None:
        """The output files (seed-shuffled order for OpenR1 rows, input order otherwise)."""
        order = (openr1.shuffled_order(self.kept, self.options.shuffle_seed)
                 if self.fmt == "openr1" else range(self.kept))
        for name, spool in self.spools.items():
            spool.write(directory / f"{name}.jsonl", order)


OUTPUT_FILES = ("sft.jsonl", "pairs.jsonl", "stats.json")
STAGING, PREVIOUS = ".prepare.tmp", ".prepare-previous"


def _set_aside_previous(output_dir: Path) -> None:
    """Move a previous run's outputs to ``.prepare-previous/`` (replacing an older set), so
    that a run that fails leaves nothing that looks complete, and nothing is lost."""
    found = [output_dir / n for n in OUTPUT_FILES if (output_dir / n).is_file()]
    if not found:
        return
    previous = output_dir / PREVIOUS
    shutil.rmtree(previous, ignore_errors=True)
    previous.mkdir()
    for path in found:
        os.replace(path, previous / path.name)


def _swap_in(staging: Path, output_dir: Path) -> None:
    """The finished outputs into place (``stats.json``, which says a run completed, last)."""
    for name in OUTPUT_FILES:
        if (staging / name).is_file():
            os.replace(staging / name, output_dir / name)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(output_dir / PREVIOUS, ignore_errors=True)


def _detect(rows: Iterator) -> tuple[str | None, Iterator]:
    """The format of the first record (None: there is none), and the rows with the ones
    looked at put back."""
    seen = []
    for item in rows:
        seen.append(item)
        if isinstance(item, Row):
            found = detect_format(item.data)
            if found is None:
                raise DataError(item.file, item.number, None, "unknown_format",
                                "cannot tell the input format: expected OpenR1-Math-Raw fields "
                                "(problem, generations, correctness), 'messages', or "
                                "'prompt'/'chosen'/'rejected' (or pass --format)")
            return found, itertools.chain(seen, rows)
    return None, iter(seen)


def prepare(input_path: str | Path, output_dir: str | Path, formatter: Formatter,
            options: PrepareOptions = PrepareOptions()) -> dict:
    """Build the outputs described in the module docstring; returns the statistics.

    Raises DataError on bad input (unless options.skip_invalid, which drops and counts
    bad rows; a missing file or an input with no valid row is always an error);
    OutputError if output_dir is a file, is locked by another run, or the disk is full.
    """
    with RunLock(output_dir):
        return _prepare(input_path, Path(output_dir), formatter, options)


def _prepare(input_path: str | Path, output_dir: Path, formatter: Formatter,
             options: PrepareOptions) -> dict:
    started = time.perf_counter()
    if options.input_format not in ("auto", *FORMATS):
        raise ValueError(f"input_format must be 'auto' or one of {FORMATS}")
    total = count_rows(input_path)  # first: a wrong --input changes nothing
    _set_aside_previous(output_dir)
    staging = output_dir / STAGING
    with full_disk_reported(output_dir, "outputs not written; free space and rerun",
                            staging):
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        return _prepare_into(staging, input_path, output_dir, formatter, options, total,
                             started)


def _prepare_into(staging: Path, input_path: str | Path, output_dir: Path,
                  formatter: Formatter, options: PrepareOptions, total: int | None,
                  started: float) -> dict:
    """Read, check and count the rows; write the outputs into ``staging``; swap them in."""
    from tqdm import tqdm

    quiet = not options.progress or (total is not None and total < PROGRESS_MIN_ROWS)
    with tqdm(read_rows(input_path), total=total, unit=" rows", desc="prepare",
              disable=quiet) as progress:
        fmt, rows = options.input_format, iter(progress)
        if fmt == "auto":
            fmt, rows = _detect(rows)
        # fmt is None when the input holds no record, only errors: any parser will do
        preparer = _Preparer(fmt or "openr1", formatter, options, staging)
        preparer.skipped_files = [str(p) for p in skipped_files(input_path)]
        for chunk in _chunks(preparer.parse(rows), options.chunk_size):
            preparer.add(chunk)
    if preparer.read == sum(preparer.invalid.counts.values()):
        skipped = f" ({preparer.read} invalid rows skipped)" if preparer.read else ""
        raise DataError(str(input_path), None, None, "empty_input", f"no valid rows{skipped}")
    check_some_preference(str(input_path), preparer.identical_pairs, preparer.pairs_seen)
    preparer.write(staging)
    stats = preparer.stats(input_path, started)
    (staging / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    _swap_in(staging, output_dir)
    return stats


def prepare_builtin_task(output_dir: str | Path, formatter: Formatter,
                         num_problems: int | None = None, num_test: int | None = None,
                         seed: int = 0, options: PrepareOptions = PrepareOptions(),
                         **task_options) -> dict:
    """Generate the built-in task into output_dir (``raw.jsonl``, ``test.jsonl``,
    ``validation.jsonl``, ``test_pairs.jsonl``; see ``builtin_task.write_task``; sizes
    default to ``builtin_task.DEFAULT_PROBLEMS`` / ``DEFAULT_TEST``) and prepare it
    (``sft.jsonl``, ``pairs.jsonl``, ``stats.json``). Returns the statistics."""
    from redi.data import builtin_task

    with RunLock(output_dir):
        paths = builtin_task.write_task(
            output_dir, num_problems or builtin_task.DEFAULT_PROBLEMS,
            num_test or builtin_task.DEFAULT_TEST, seed, **task_options)
        # the generator may draw a problem twice, each time with its own traces: both kept
        options = dataclasses.replace(options, drop_duplicate_problems=False)
        return _prepare(paths["raw"], Path(output_dir), formatter, options)
