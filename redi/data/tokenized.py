"""Tokenized training sets: conversations or ``sft.jsonl`` / ``pairs.jsonl`` files to
``datasets.Dataset`` objects that the collators (``batching.py``) and the sampler
(``sampler.py``, over the ``length`` column) consume.

SFT columns: ``input_ids``, ``labels`` (shifted, see ``formatting.py``), ``length``,
``index`` (the row's position, which collated batches carry, e.g. to look up cached
reference log-probs). Pair columns: ``chosen_input_ids``, ``chosen_labels``,
``rejected_input_ids``, ``rejected_labels``, ``length`` (chosen + rejected tokens, what a
packed batch holds), ``index``.
Token lists are stored as Arrow int32 lists (compact, in memory); rows are truncated as
the formatter says.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

from redi.data.errors import DataError
from redi.data.formatting import Formatter
from redi.data.io import read_rows
from redi.data.validation import check_some_preference, messages_row, preference_row

CHUNK = 2048


def _build(items: Iterable, encode: Callable[[list], list[dict]], columns: list[str]):
    import datasets

    tokens = datasets.Sequence(datasets.Value("int32"))
    features = datasets.Features({name: tokens for name in columns} |
                                 {"length": datasets.Value("int32"),
                                  "index": datasets.Value("int64")})
    parts, iterator, done = [], iter(items), 0
    while chunk := list(itertools.islice(iterator, CHUNK)):
        examples = encode(chunk)
        table = {name: [e[name] for e in examples] for name in columns}
        table["length"] = [sum(len(e[name]) for name in columns if name.endswith("input_ids"))
                           for e in examples]
        table["index"] = list(range(done, done + len(examples)))
        done += len(examples)
        parts.append(datasets.Dataset.from_dict(table, features=features))
    if not parts:
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    return datasets.concatenate_datasets(parts)


def tokenize_sft(conversations: Iterable[list[dict]], formatter: Formatter):
    """SFT examples (every assistant message trained) as a Dataset."""
    return _build(conversations, formatter.encode_sft, ["input_ids", "labels"])


def tokenize_pairs(pairs: Iterable[tuple[list[dict], list[dict], list[dict]]],
                   formatter: Formatter):
    """(prompt, chosen, rejected) message lists as a Dataset of pairs."""
    sides = [f"{side}_{part}" for side in ("chosen", "rejected")
             for part in ("input_ids", "labels")]
    return _build(pairs, formatter.encode_pairs, sides)


def _records(path: str | Path, parse) -> Iterable:
    """Validated records of a prepared file (any bad row is an error)."""
    found = False
    for item in read_rows(path):
        if isinstance(item, DataError):
            raise item
        found = True
        yield parse(item)
    if not found:
        raise DataError(str(path), None, None, "empty_input", "no rows")


def load_sft(path: str | Path, formatter: Formatter):
    """``sft.jsonl`` (or any file of TRL ``messages`` rows), tokenized."""
    return tokenize_sft(_records(path, messages_row), formatter)


def load_pairs(path: str | Path, formatter: Formatter):
    """``pairs.jsonl`` (or any file of TRL preference rows), tokenized; a set whose pairs
    all have the same chosen and rejected completion is refused."""
    counts = {"pairs": 0, "identical": 0}

    def counted():
        for prompt, chosen, rejected in _records(path, preference_row):
            counts["pairs"] += 1
            counts["identical"] += chosen == rejected
            yield prompt, chosen, rejected

    dataset = tokenize_pairs(counted(), formatter)
    check_some_preference(str(path), counts["identical"], counts["pairs"])
    return dataset


def content_digest(dataset) -> str:
    """sha256 of a tokenized set's token columns, row by row: what a model computes on. A
    prepared file's provenance fields (source paths, row numbers) do not enter, so the same
    data prepared in another directory gets the same digest."""
    import pyarrow.compute as pc

    digest, table = hashlib.sha256(), dataset.with_format("arrow")
    for name in dataset.column_names:
        if name in ("length", "index"):  # derived from the token columns
            continue
        lengths, values = hashlib.sha256(), hashlib.sha256()
        for chunk in table[name].chunks:
            lengths.update(pc.list_value_length(chunk).to_numpy().tobytes())
            values.update(chunk.flatten().to_numpy().tobytes())
        digest.update(f"{name}:{lengths.hexdigest()}:{values.hexdigest()}\n".encode())
    return digest.hexdigest()
