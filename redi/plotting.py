"""PNG figures with matplotlib, shared by ``redi demo``'s report (``redi.demo.report``) and the
benchmark's plots (``bench/plots.py``): the file-only Agg backend, a row of panels, the save.

matplotlib comes with the ``demo`` and ``bench`` extras, not the core install: it is imported
on the first figure, never by ``import redi``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DPI = 110


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (writes files, needs no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def panels(path: str | Path, count: int, figsize: tuple[float, float],
           **subplots: Any) -> Iterator[tuple[Any, list[Any]]]:
    """A figure of ``count`` panels side by side: yields ``(figure, axes)``; when the block
    ends, laid out and saved to ``path`` (PNG, ``DPI``). The figure is closed either way."""
    plt = pyplot()
    fig, axes = plt.subplots(1, count, figsize=figsize, squeeze=False, **subplots)
    try:
        yield fig, list(axes[0])
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
