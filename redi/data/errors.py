"""Input errors that name the file, the 1-based row and the field, and their counting."""

from __future__ import annotations

from collections import Counter


class DataError(ValueError):
    """Bad input: ``file``, 1-based ``row`` and ``field`` (None where not applicable), a short
    ``reason`` key (counted in stats.json under --skip-invalid) and a human ``detail``."""

    def __init__(self, file: str, row: int | None, field: str | None, reason: str,
                 detail: str):
        self.file, self.row, self.field, self.reason, self.detail = file, row, field, reason, detail
        where = [file] + ([f"row {row}"] if row is not None else [])
        where += [f"field '{field}'"] if field is not None else []
        super().__init__(f"{': '.join(where)}: {detail}")


class InvalidRows:
    """What to do with a bad row: raise its DataError, or (skip=True) drop and count it."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.counts: Counter[str] = Counter()

    def reject(self, error: DataError) -> None:
        if not self.skip or error.row is None:
            raise error
        self.counts[error.reason] += 1
