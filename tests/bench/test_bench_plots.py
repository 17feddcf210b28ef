"""bench/plots.py: several token counts give lines; one token count a grouped bar chart with
the floor drawn as a line across it."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
plots = pytest.importorskip("plots")
from matplotlib.axes import Axes  # noqa: E402


def _rows(tokens):
    return [dict(loss=loss, impl=impl, tokens=t, time_s=None if value is None else value * t)
            for t in tokens
            for loss, impl, value in (("redi", "ours", 1.0), ("redi", "naive", 2.0),
                                      ("dpo", "ours", 1.2), ("dpo", "liger", None),
                                      ("floor", "3 matmuls", 0.9))]


@pytest.fixture
def calls(monkeypatch):
    seen = {"bar": [], "axhline": [], "plot": []}
    for name in seen:
        real = getattr(Axes, name)
        monkeypatch.setattr(Axes, name, lambda self, *a, _n=name, _r=real, **k:
                            seen[_n].append(a) or _r(self, *a, **k))
    return seen


def test_single_shape_is_a_grouped_bar_chart_with_the_floor(tmp_path, calls):
    path = plots.plot_against_tokens(_rows([4096]), "time_s", 1.0, "s", "t", tmp_path / "a.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    heights = sorted(a[1] for a in calls["bar"])
    assert heights == [4096.0, 4915.2, 8192.0]  # one bar per value; the missing one has none
    assert [a[0] for a in calls["axhline"]] == [pytest.approx(0.9 * 4096)]
    assert not calls["plot"]


def test_several_shapes_are_lines(tmp_path, calls):
    plots.plot_against_tokens(_rows([1024, 4096]), "time_s", 1.0, "s", "t", tmp_path / "b.png")
    assert calls["plot"] and not calls["bar"]
