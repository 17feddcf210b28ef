"""The demo's write-up: ``results.md`` (the test table with the mechanism, the paired
differences, the validation sweep, Stage 1, the teacher, the pre-registered prediction) and
``stage2_curves.png`` (validation accuracy along Stage 2; the selection metric and the terse
share against the learning rate), from the results dict ``redi.demo.run`` builds.
"""

from __future__ import annotations

from pathlib import Path

from redi.demo.design import SELECTION_METRIC, TEST_TEMPERATURE, label
from redi.plotting import panels

COLORS = {"sft_more": "tab:brown", "sft_continued": "tab:gray", "redi": "tab:red",
          "redi_symmetric": "tab:orange", "dpo": "tab:blue", "simpo": "tab:green",
          "redi_floor": "tab:purple"}
# sweep tables: (title, the cell's value per seed, its format)
SWEEP_TABLES = (
    ("validation sampled pass@1 % (the selection metric)",
     lambda c: c[SELECTION_METRIC], "pct"),
    ("validation greedy accuracy %", lambda c: c["val_greedy"], "pct"),
    ("terse share of the validation samples %", lambda c: c["terse_share"], "pct"),
    ("accuracy of the verbose validation samples %",
     lambda c: c["accuracy_by_style"]["verbose"], "pct"),
    ("accuracy of the terse validation samples %",
     lambda c: c["accuracy_by_style"]["terse"], "pct"),
    ("chosen traces' log-prob per token (Stage-2 pairs, final model)",
     lambda c: c["chosen_logp_per_token"], "logp"),
    ("rejected traces' log-prob per token (Stage-2 pairs, final model)",
     lambda c: c["rejected_logp_per_token"], "logp"),
)


def _fmt(value, kind: str = "pct") -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if kind == "pct" else f"{value:.3f}"


def _per_seed(values, kind: str = "pct") -> str:
    return " / ".join(_fmt(v, kind) for v in values)


def results_table(results: dict) -> str:
    """Markdown: the test table (percent), the paired differences, the sweep, Stage 1, the
    teacher's statistics and the pre-registered prediction."""
    seeds, size = results["seeds"], results["size"]
    lines = [f"Task {results['task']!r}, seeds {seeds}: test pass@1 over k = {size['samples']} "
             f"samples per problem at temperature {TEST_TEMPERATURE} on {size['test']} "
             "problems (SE over problems); terse share and accuracy by style of the same "
             "samples, per seed.", "",
             "| model | lr | test pass@1 % (mean ± spread over seeds) | per seed (± SE) | "
             "terse share % | accuracy verbose % | accuracy terse % | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in results["methods"].items():
        per_seed = ", ".join(f"{100 * p:.1f} ± {100 * se:.1f}"
                             for p, se in zip(m["pass1"], m["pass1_se"], strict=True))
        lr = f"{m['lr']:g}" if m["lr"] is not None else "-"
        lines.append(f"| {label(name)} | {lr} | {100 * m['mean']:.1f} ± "
                     f"{100 * m['spread']:.1f} | {per_seed} | {_per_seed(m['terse_share'])} | "
                     f"{_per_seed(m['accuracy_by_style']['verbose'])} | "
                     f"{_per_seed(m['accuracy_by_style']['terse'])} | {m['seeds']} |")
    lines += ["", "| paired difference (test) | diff (points) | SE | dof | t_crit | called? | "
              "seeds |", "|---|---|---|---|---|---|---|"]
    for name, p in results["paired"].items():
        lines.append(f"| {name.replace('_minus_', ' − ')} | {100 * p['diff']:+.2f} | "
                     f"{100 * p['se']:.2f} | {p['dof']:.1f} | {p['t_crit']:.2f} | "
                     f"{'yes' if p['called'] else 'no'} | {p['seeds']} |")
    lines += ["", f"Paired differences: per problem within a seed, then over seeds; "
              f"{results['statistics']}."]
    lines += _sweep_section(results)
    lines += _stage1_section(results)
    lines += ["", f"Teacher data: {_teacher_line(results['teacher'])}."
              + (f" Split problems: Stage 1 on {split['stage1_sft_rows']} problems' correct "
                 f"traces, Stage 2 on {split['stage2_pairs']} pairs of other problems."
                 if (split := results.get("split_problems")) else "")]
    lines += ["", "Pre-registered before any test figure:", "", f"> {results['preregistered']}"]
    return "\n".join(lines)


def _sweep_section(results: dict) -> list[str]:
    sweep, selection = results["sweep"], results["selection"]
    if not sweep:
        return []
    lines = ["", f"Validation ({selection['validation_problems']} problems; sampled: k = "
             f"{results['size']['samples']} at temperature {TEST_TEMPERATURE}), every "
             "trained rate, one value per seed. Selection: "
             f"{selection['rule']}. Chosen: "
             + ", ".join(f"{m} {lr:g}" for m, lr in selection["chosen"].items())
             + ". Usable window (within 2 points of the best): "
             + "; ".join(f"{m} {', '.join(rates)}"
                         for m, rates in results["usable_window"].items()) + "."]
    rates = sorted({lr for points in sweep.values() for lr in points}, key=float)
    for title, value, kind in SWEEP_TABLES:
        lines += ["", f"| {title} | " + " | ".join(f"lr {lr}" for lr in rates) + " |",
                  "|---|" + "---|" * len(rates)]
        for name, points in sweep.items():
            cells = [_per_seed(value(points[lr]), kind) if lr in points else ""
                     for lr in rates]
            lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    if longer := results.get("sft_more_longer"):
        lines += ["", f"Falsification control: {label('sft_more')} at its chosen rate "
                  f"{longer['lr']:g} with {longer['times_steps']}x the steps: validation "
                  f"sampled pass@1 {_per_seed(longer[SELECTION_METRIC])} %, terse share "
                  f"{_per_seed(longer['terse_share'])} % (seeds {longer['seeds']})."]
    return lines


def _stage1_section(results: dict) -> list[str]:
    seeds = list(results["stage1"])
    lines = ["", f"Stage 1 ({results['size']['stage1_points']} evenly spaced checkpoints; "
             f"plateau: {results['stage1'][seeds[0]]['rule']}):", "",
             "| seed | plateau | gain (points) ± SE, t_crit | validation greedy % per "
             "checkpoint | val sampled % | val greedy % | terse share % | accuracy verbose / "
             "terse % | log-prob per token chosen / rejected |", "|---" * 9 + "|"]
    for seed, s in results["stage1"].items():
        v = s["validation"]
        gain = (f"{100 * s['gain']:+.1f} ± {100 * s['gain_se']:.1f}, {s['t_crit']:.2f}"
                if s["gain"] is not None else "-")
        lines.append(f"| {seed} | {'yes' if s['plateau'] else 'NO'} | {gain} | "
                     + ", ".join(f"{100 * acc:.1f}" for _, acc in s["curve"])
                     + f" | {_fmt(v[SELECTION_METRIC])} | {_fmt(v['val_greedy'])} | "
                     f"{_fmt(v['terse_share'])} | {_fmt(v['accuracy_by_style']['verbose'])} / "
                     f"{_fmt(v['accuracy_by_style']['terse'])} | "
                     f"{_fmt(v['chosen_logp_per_token'], 'logp')} / "
                     f"{_fmt(v['rejected_logp_per_token'], 'logp')} |")
    return lines


def _teacher_line(teacher: dict) -> str:
    line = (f"{teacher['problems']} problems, {teacher['samples']} samples, "
            f"{100 * teacher['wrong_samples']:.1f} % wrong; {teacher['sft_rows']} SFT rows, "
            f"{teacher['pairs']} pairs")
    if "error_rate_by_style" not in teacher:
        return line
    rates = ", ".join(f"{s} {_fmt(r)}{' %' * (r is not None)}"
                      for s, r in teacher["error_rate_by_style"].items())
    shares = ", ".join(f"{s} {_fmt(r)} %" for s, r in teacher["style_share"].items())
    return (f"{line}; share of the samples by style: {shares}; error rate by style: {rates}; "
            f"terse share of the correct samples {_fmt(teacher['terse_share_of_correct'])} %")


def plot_curves(path: Path, results: dict) -> Path:
    """One figure: validation greedy accuracy vs Stage-2 step of the chosen runs, every
    method and seed; the selection metric (validation sampled pass@1 of the final model) vs
    learning rate; the terse share of those samples vs learning rate (both: mean over the
    seeds, bars: min to max, every method; dashed: Stage 1's, where every method starts)."""
    with panels(path, 3, (19, 4.5)) as (_, axes):
        _plot_chosen_runs(axes[0], results)
        _plot_sweep(axes[1], results, SELECTION_METRIC,
                    "validation sampled pass@1 % (final model)")
        _plot_sweep(axes[2], results, "terse_share", "terse share of validation samples %")
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


def _plot_sweep(ax, results: dict, key: str, ylabel: str) -> None:
    start = [100 * s["validation"][key] for s in results["stage1"].values()
             if s["validation"][key] is not None]
    if start:
        ax.axhline(sum(start) / len(start), color="black", linestyle="--", linewidth=1,
                   label="Stage 1 (the start)")
    for method, points in results["sweep"].items():
        rates = sorted(points, key=float)
        values = [[100 * v for v in points[lr][key] if v is not None] for lr in rates]
        kept = [(float(lr), v) for lr, v in zip(rates, values, strict=True) if v]
        if not kept:
            continue
        mean = [sum(v) / len(v) for _, v in kept]
        ax.errorbar([lr for lr, _ in kept], mean, marker="o", capsize=3,
                    yerr=[[m - min(v) for m, (_, v) in zip(mean, kept, strict=True)],
                          [max(v) - m for m, (_, v) in zip(mean, kept, strict=True)]],
                    color=COLORS[method], label=label(method))
    ax.set_xscale("log")
    ax.set_xlabel("Stage-2 learning rate")
    ax.set_ylabel(ylabel)
    ax.set_title(f"every trained rate, mean over seeds {results['seeds']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
