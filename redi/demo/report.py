"""The demo's write-up: ``results.md`` (the test table, the paired differences, the sweep)
and ``stage2_curves.png`` (validation accuracy along Stage 2 and against the learning rate),
from the results dict ``redi.demo.run`` builds.
"""

from __future__ import annotations

from pathlib import Path

from redi.demo.design import TEST_TEMPERATURE, label
from redi.plotting import panels

COLORS = {"sft_continued": "tab:gray", "redi": "tab:red", "redi_symmetric": "tab:orange",
          "dpo": "tab:blue", "simpo": "tab:green"}


def results_table(results: dict) -> str:
    """Markdown: the test table (percent), the headline paired differences, the sweep."""
    seeds = results["seeds"]
    lines = ["| model | lr | test pass@1 % (mean ± spread over seeds) | per seed (± SE) | seeds |",
             "|---|---|---|---|---|"]
    for name, m in results["methods"].items():
        per_seed = ", ".join(f"{100 * p:.1f} ± {100 * se:.1f}"
                             for p, se in zip(m["pass1"], m["pass1_se"], strict=True))
        lr = f"{m['lr']:g}" if m["lr"] is not None else "-"
        lines.append(f"| {label(name)} | {lr} | {100 * m['mean']:.1f} ± "
                     f"{100 * m['spread']:.1f} | {per_seed} | {m['seeds']} |")
    lines += ["", "| paired difference (test) | diff (points) | SE | beyond 2 SE? | seeds |",
              "|---|---|---|---|---|"]
    for name, p in results["paired"].items():
        lines.append(f"| {name.replace('_minus_', ' − ')} | {100 * p['diff']:+.2f} | "
                     f"{100 * p['se']:.2f} | {'yes' if p['called'] else 'no'} | "
                     f"{p['seeds']} |")
    if results["sweep"]:
        lines += _sweep_table("validation greedy accuracy % (sweep)", results["sweep"],
                              lambda v: f"{100 * v:.1f}")
        lines += _sweep_table("chosen traces' log-prob per token at the end of Stage 2 (sweep)",
                              results["sweep_chosen_logp_avg"], lambda v: f"{v:.3f}")
    plateaus = ", ".join(f"seed {s}: {'yes' if v['plateau'] else 'NO'} (gain "
                         + (f"{100 * v['gain']:+.1f} ± {100 * v['gain_se']:.1f}; "
                            if v["gain"] is not None else "")
                         + ", ".join(f"{100 * acc:.1f}" for _, acc in v["curve"]) + " %)"
                         for s, v in results["stage1"].items())
    lines += ["", f"Task {results['task']!r}, seeds {seeds}, k = {results['size']['samples']} "
              f"test samples per problem at temperature {TEST_TEMPERATURE} on "
              f"{results['size']['test']} problems; SE over problems; sweep cells: one value "
              f"per seed on {results['size']['validation']} validation problems; chosen "
              f"rates: {results['selection']['chosen']}. Stage-1 plateau "
              f"({results['stage1'][str(seeds[0])]['rule']}; validation greedy accuracy at "
              f"{results['size']['stage1_points']} evenly spaced checkpoints): {plateaus}. "
              f"Teacher data: {results['teacher']}."
              + (f" Split problems: Stage 1 on {split['stage1_sft_rows']} problems' correct "
                 f"traces, Stage 2 on {split['stage2_pairs']} pairs of other problems."
                 if (split := results.get("split_problems")) else "")]
    return "\n".join(lines)


def _sweep_table(title: str, by_method: dict[str, dict[str, list[float]]], fmt) -> list[str]:
    """Markdown lines: one row per method, one column per rate, one value per seed."""
    rates = list(next(iter(by_method.values())))
    lines = ["", f"| {title} | " + " | ".join(f"lr {lr}" for lr in rates) + " |",
             "|---|" + "---|" * len(rates)]
    for name, points in by_method.items():
        cells = [" / ".join(fmt(v) for v in points[lr]) for lr in rates]
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    return lines


def plot_curves(path: Path, results: dict) -> Path:
    """One figure: validation greedy accuracy vs Stage-2 step of the chosen runs, every
    method and seed; beside it, when there was a sweep, the final validation accuracy vs
    learning rate (mean over the sweep seeds, bars: min to max), every method."""
    sweep = results["sweep"]
    with panels(path, 2 if sweep else 1, (13 if sweep else 7, 4.5)) as (_, axes):
        _plot_chosen_runs(axes[0], results)
        if sweep:
            _plot_sweep(axes[1], results)
    return path


def _plot_chosen_runs(ax, results: dict) -> None:
    for method, per_seed in results["curves"].items():
        for i, points in enumerate(per_seed.values()):
            xs, ys = zip(*points, strict=True)
            lr = results["methods"][method]["lr"]
            ax.plot(xs, [100 * y for y in ys], marker="o", color=COLORS[method], alpha=0.8,
                    label=f"{label(method)}, lr {lr:g}" if i == 0 else None)
    ax.set_xlabel("Stage-2 step")
    ax.set_ylabel("validation greedy accuracy %")
    ax.set_title(f"chosen rates; task {results['task']!r}, seeds {results['seeds']} "
                 "(step 0: Stage 1)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot_sweep(ax, results: dict) -> None:
    for method, points in results["sweep"].items():
        rates = sorted(points, key=float)
        values = [[100 * v for v in points[lr]] for lr in rates]
        mean = [sum(v) / len(v) for v in values]
        ax.errorbar([float(lr) for lr in rates], mean, marker="o", capsize=3,
                    yerr=[[m - min(v) for m, v in zip(mean, values, strict=True)],
                          [max(v) - m for m, v in zip(mean, values, strict=True)]],
                    color=COLORS[method], label=label(method))
    ax.set_xscale("log")
    ax.set_xlabel("Stage-2 learning rate")
    ax.set_ylabel("validation greedy accuracy % (final model)")
    seeds = results["selection"]["sweep_seeds"]
    ax.set_title(f"the sweep: every rate, mean over seeds {seeds}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
