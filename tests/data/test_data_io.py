"""Reading local files: formats, row numbers, undecodable lines."""

import json

import datasets
import pytest

from redi.data.errors import DataError
from redi.data.io import Row, count_rows, read_rows

RECORDS = [{"a": 1}, {"a": 2}, {"a": 3}]


def test_jsonl_rows_are_numbered_by_line_and_bad_lines_become_errors(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n{"a": 3}\n')
    items = list(read_rows(path))
    assert items[0] == Row(str(path), 1, {"a": 1})
    assert isinstance(items[1], DataError)
    assert (items[1].file, items[1].row, items[1].field, items[1].reason) == (
        str(path), 3, None, "undecodable_line")
    assert str(items[1]).startswith(f"{path}: row 3: not valid JSON")
    assert items[2] == Row(str(path), 4, {"a": 3})
    assert count_rows(path) == 4


def test_undecodable_bytes_are_an_error(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    assert [type(i).__name__ for i in read_rows(path)] == ["Row", "DataError"]


def test_json_array_parquet_arrow_and_saved_dataset(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps(RECORDS))
    table = datasets.Dataset.from_list(RECORDS)
    table.to_parquet(str(tmp_path / "x.parquet"))
    table.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": table}).save_to_disk(str(tmp_path / "dict"))
    for name in ("x.json", "x.parquet", "saved", "dict"):
        rows = list(read_rows(tmp_path / name))
        assert [(r.number, r.data) for r in rows] == [(1, RECORDS[0]), (2, RECORDS[1]),
                                                      (3, RECORDS[2])], name
    assert [count_rows(tmp_path / n) for n in ("x.json", "x.parquet", "saved")] == [None, 3, 3]
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    assert [r.data for r in read_rows(arrow)] == RECORDS


def test_a_directory_of_files_is_read_in_path_order(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"a": 2}\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jsonl").write_text('{"a": 3}\n')
    (tmp_path / "a.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.json").write_text("ignored")
    datasets.Dataset.from_list([{"a": 4}]).save_to_disk(str(tmp_path / "saved"))
    rows = list(read_rows(tmp_path))
    assert [(r.file, r.data["a"]) for r in rows] == [
        (str(tmp_path / "a.jsonl"), 1), (str(tmp_path / "b.jsonl"), 2),
        (str(tmp_path / "saved"), 4), (str(tmp_path / "sub" / "c.jsonl"), 3)]


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        list(read_rows(tmp_path / "nope"))
    with pytest.raises(DataError, match="no .jsonl, .ndjson, .json, .parquet, .arrow files"):
        list(read_rows(tmp_path))
    datasets.DatasetDict({"test": datasets.Dataset.from_list(RECORDS)}).save_to_disk(
        str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"without a 'train' split \(splits: \['test'\]\)"):
        list(read_rows(tmp_path / "d"))
