"""PNG plots of a section's time and peak memory against tokens (``redi.plotting``: matplotlib,
Agg).

Several token counts: one line per implementation against tokens. A single token count (one
shape): a grouped bar chart, one group per loss, the floor a dashed line across them.
"""

from __future__ import annotations

from matplotlib import ticker

from redi.plotting import panels

FLOOR = "floor"


def _series(rows, key, scale):
    points = sorted((r["tokens"], r[key] * scale) for r in rows if r.get(key))
    return [x for x, _ in points], [y for _, y in points]


def plot_single_shape(rows, key, scale, ylabel, title, path):
    """Bars of ``key`` per implementation, grouped by loss (linear y axis from zero, so bar
    heights compare), the floor drawn as a dashed line; rows without a value (OOM) get no
    bar."""
    floor = [r[key] * scale for r in rows if r["loss"] == FLOOR and r.get(key)]
    losses = list(dict.fromkeys(r["loss"] for r in rows if r["loss"] != FLOOR))
    groups = [[r for r in rows if r["loss"] == loss] for loss in losses]
    width = 0.8 / max(len(g) for g in groups)
    with panels(path, 1, (max(6.0, 2.2 * len(losses) + 2), 4.6)) as (_, (ax,)):
        colors = {}
        for i, group in enumerate(groups):
            left = i - width * (len(group) - 1) / 2
            for j, r in enumerate(group):
                color = colors.setdefault(r["impl"], f"C{len(colors) % 10}")
                value = r[key] * scale if r.get(key) else None
                if value is None:
                    continue
                ax.bar(left + j * width, value, width * 0.9, color=color,
                       label=r["impl"] if r["impl"] not in ax.get_legend_handles_labels()[1]
                       else None)
                ax.annotate(f"{value:.0f}" if value >= 100 else f"{value:.3g}",
                            (left + j * width, value), ha="center",
                            va="bottom", fontsize="x-small")
        if floor:
            ax.axhline(floor[0], color="k", linestyle="--", linewidth=1.2,
                       label=f"floor ({next(r['impl'] for r in rows if r['loss'] == FLOOR)})")
        ax.set_xticks(range(len(losses)), losses)
        ax.set(ylabel=ylabel, title=f"{title} ({rows[0]['tokens']} tokens)")
        ax.grid(True, axis="y", which="major", alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return path


def plot_against_tokens(rows, key, scale, ylabel, title, path):
    """One panel per loss (shared y axis), one line per implementation, the floor rows dashed
    in every panel; log-log axes. Rows without a value (OOM) are left out. A single token
    count is drawn by ``plot_single_shape`` instead."""
    tokens = sorted({r["tokens"] for r in rows})
    if len(tokens) == 1:
        return plot_single_shape(rows, key, scale, ylabel, title, path)
    floor = [r for r in rows if r["loss"] == FLOOR]
    losses = list(dict.fromkeys(r["loss"] for r in rows if r["loss"] != FLOOR))
    with panels(path, len(losses), (4.8 * len(losses), 4.2), sharey=True) as (fig, axes):
        for ax, loss in zip(axes, losses):
            mine = [r for r in rows if r["loss"] == loss]
            for impl in dict.fromkeys(r["impl"] for r in mine):
                ax.plot(*_series([r for r in mine if r["impl"] == impl], key, scale),
                        marker="o", label=impl)
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
        axes[0].set_ylabel(ylabel)
        fig.suptitle(title)
    return path
