"""Result rows -> the stdout table, ``<stem>.json`` and ``<stem>.csv``.

Every section returns a list of flat dict rows, each with at least ``section``, ``loss``,
``impl``, ``status`` ("ok" or "oom"), ``time_s`` and ``peak_bytes``. A ``Section`` says how
to run one and which columns its table shows; ``run.py`` keeps the registry.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

from settings import Settings


@dataclasses.dataclass(frozen=True)
class Column:
    header: str
    key: str
    fmt: str = "{}"  # applied to the value; None and missing values print as "-"
    left: bool = False  # left-align (text) instead of right-align (numbers)
    scale: float = 1.0  # numbers are multiplied by it before formatting


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    describe: Callable[[Settings], str]  # one line: what is measured, at which shapes
    run: Callable[[Settings], list[dict]]
    columns: tuple[Column, ...]
    plotted: bool  # rows carry ``tokens`` and are worth plotting against it
    # the rows as a markdown report, ``(settings, rows, environment) -> text``, written
    # beside the JSON as ``<stem>-<name>.md``
    markdown: Callable[[Settings, list[dict], dict], str] | None = None


MS = Column("time ms", "time_s", "{:.1f}", scale=1e3)
PEAK = Column("peak MiB", "peak_bytes", "{:.1f}", scale=2**-20)


def add_ratios(rows, name, baseline, match, keys=("time_s", "peak_bytes")):
    """Set ``row[f"{key}_vs_{name}"] = row[key] / base[key]`` for the ``base`` row with
    ``baseline(base)`` true and the same ``match`` fields (None where either is missing)."""
    bases = {tuple(r[k] for k in match): r for r in rows if baseline(r)}
    for row in rows:
        base = bases.get(tuple(row[k] for k in match))
        for key in keys:
            num, den = row.get(key), None if base is None else base.get(key)
            row[f"{key}_vs_{name}"] = num / den if num is not None and den else None


def _cell(column, row):
    value = row.get(column.key)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "OOM" if row.get("status") == "oom" and column.key in ("time_s", "peak_bytes") \
            else "-"
    return column.fmt.format(value * column.scale if column.scale != 1.0 else value)


def table(section: Section, settings: Settings, rows) -> str:
    """The section's rows as an aligned text table under a two-line heading."""
    cells = [[c.header for c in section.columns]]
    cells += [[_cell(c, r) for c in section.columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(section.columns))]
    lines = [f"== {section.name}: {section.describe(settings)}"]
    for i, line in enumerate(cells):
        lines.append("  ".join(s.ljust(w) if c.left else s.rjust(w)
                               for s, w, c in zip(line, widths, section.columns)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: Path, environment: dict, settings: Settings, rows):
    payload = {"environment": environment,
               "settings": {k: (str(v) if k == "dtype" else v)
                            for k, v in dataclasses.asdict(settings).items()},
               "results": rows}
    path.write_text(json.dumps(payload, indent=1) + "\n")


def write_csv(path: Path, environment: dict, rows):
    """One line per row, every row prefixed with the environment columns."""
    flat = [{**environment, **{k: v for k, v in r.items() if k != "times_s"},
             "times_s": " ".join(f"{t:.6g}" for t in r.get("times_s", []))} for r in rows]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(flat)
