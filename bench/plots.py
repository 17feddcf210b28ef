"""PNG plots of a section's time and peak memory against tokens (matplotlib, Agg)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

FLOOR = "floor"


def _series(rows, key, scale):
    points = sorted((r["tokens"], r[key] * scale) for r in rows if r.get(key))
    return [x for x, _ in points], [y for _, y in points]


def plot_against_tokens(rows, key, scale, ylabel, title, path):
    """One panel per loss (shared y axis), one line per implementation, the floor rows dashed
    in every panel; log-log axes. Rows without a value (OOM) are left out."""
    floor = [r for r in rows if r["loss"] == FLOOR]
    losses = list(dict.fromkeys(r["loss"] for r in rows if r["loss"] != FLOOR))
    tokens = sorted({r["tokens"] for r in rows})
    fig, axes = plt.subplots(1, len(losses), figsize=(4.8 * len(losses), 4.2), squeeze=False,
                             sharey=True)
    for ax, loss in zip(axes[0], losses):
        mine = [r for r in rows if r["loss"] == loss]
        for impl in dict.fromkeys(r["impl"] for r in mine):
            ax.plot(*_series([r for r in mine if r["impl"] == impl], key, scale), marker="o",
                    label=impl)
        if floor:
            ax.plot(*_series(floor, key, scale), "k--", label=f"floor ({floor[0]['impl']})")
        ax.set(title=loss, xlabel="tokens", xscale="log", yscale="log")
        ax.set_xticks(tokens, [str(t) for t in tokens])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small")
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
