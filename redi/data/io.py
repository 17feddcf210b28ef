"""Reading rows from local files, never the network.

Supported inputs: JSON Lines (``.jsonl``, ``.ndjson``, or ``.json`` holding one object per
line; a line that is not an object is a bad row of its own), a JSON array (``.json``), Parquet files
(read with ``pyarrow``, no cache copy), Arrow files, a directory written by
``datasets.Dataset.save_to_disk`` (its ``train`` split for a ``DatasetDict``), or a
directory of such files and datasets (all of them, sorted by path; other files are listed
by ``skipped_files``).

``read_rows`` yields a ``Row`` per record, numbered from 1 within its file, or a
``DataError`` for a line that is not a JSON object, so that the caller decides whether to
raise it or to count it (``errors.InvalidRows``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from redi.data.errors import DataError

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
TABLE_SUFFIXES = (".parquet", ".arrow")


class Row(NamedTuple):
    """A record and where it came from (1-based row number within the file)."""

    file: str
    number: int
    data: Any


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def skipped_files(path: str | Path) -> list[Path]:
    """The files of an input directory that ``input_files`` leaves out (not a supported
    type; hidden files aside), to be reported."""
    path = Path(path)
    if not path.is_dir() or _is_saved_dataset(path):
        return []
    skipped = []
    for directory, subdirectories, names in os.walk(path):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith(".")
                                   and not _is_saved_dataset(Path(directory, d)))
        skipped += [Path(directory, n) for n in names if not n.startswith(".")
                    and Path(n).suffix not in JSON_SUFFIXES + TABLE_SUFFIXES]
    return sorted(skipped)


def input_files(path: str | Path) -> list[Path]:
    """The files and saved-dataset directories an input path stands for, in path order
    (hidden files and directories are skipped)."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, None, "missing_file", "no such file or directory")
    if path.is_file() or _is_saved_dataset(path):
        return [path]
    files = []
    for directory, subdirectories, names in os.walk(path):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for sub in list(subdirectories):
            if _is_saved_dataset(Path(directory, sub)):
                files.append(Path(directory, sub))
                subdirectories.remove(sub)
        files += [Path(directory, n) for n in names
                  if not n.startswith(".") and Path(n).suffix in JSON_SUFFIXES + TABLE_SUFFIXES]
    files.sort()
    if not files:
        raise DataError(str(path), None, None, "missing_file",
                        f"no {', '.join(JSON_SUFFIXES + TABLE_SUFFIXES)} files in this directory")
    return files


def _is_json_array(path: Path) -> bool:
    """A ``.json`` file holding one array (JSON Lines files are read line by line, even
    when a line is an array)."""
    if path.suffix != ".json":
        return False
    with path.open("rb") as f:
        head = f.read(4096).lstrip()
    return head.startswith(b"[")


def _json_rows(path: Path) -> Iterator[Row | DataError]:
    name = str(path)
    if _is_json_array(path):
        try:
            records = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(name, None, None, "undecodable_line", f"not valid JSON: {e}") from None
        yield from (Row(name, i, record) for i, record in enumerate(records, 1))
        return
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield Row(name, number, json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                yield DataError(name, number, None, "undecodable_line", f"not valid JSON: {e}")


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            number += 1
            yield Row(str(path), number, record)


def _dataset(path: Path):
    """A ``datasets.Dataset`` over an Arrow file or a saved dataset directory."""
    import datasets

    if path.suffix == ".arrow":
        return datasets.Dataset.from_file(str(path))
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(str(path), None, None, "missing_file",
                            f"a DatasetDict without a 'train' split (splits: {list(loaded)})")
        loaded = loaded["train"]
    return loaded


def read_rows(path: str | Path) -> Iterator[Row | DataError]:
    """Every record of every file of ``path`` (see the module docstring)."""
    for file in input_files(path):
        if file.is_file() and file.suffix in JSON_SUFFIXES:
            yield from _json_rows(file)
        elif file.suffix == ".parquet":
            yield from _parquet_rows(file)
        else:
            yield from (Row(str(file), i, r) for i, r in enumerate(_dataset(file), 1))


def count_rows(path: str | Path) -> int | None:
    """How many rows ``read_rows`` will yield at most, cheaply (None: not known up front)."""
    import pyarrow.parquet as pq

    total = 0
    for file in input_files(path):
        if file.suffix == ".parquet":
            total += pq.ParquetFile(file).metadata.num_rows
        elif not (file.is_file() and file.suffix in JSON_SUFFIXES):
            total += len(_dataset(file))
        elif _is_json_array(file):
            return None
        else:
            with file.open("rb") as f:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return total
