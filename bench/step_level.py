"""Step level: Stage-2 training steps of a small Qwen2, REDI vs DPO vs SimPO, ours vs naive.

Two sections, both driven through ``minimal_trainer`` (one AdamW step that can run either
loss; ``trainer_level`` measures ``redi train`` itself):

* ``step``: median time, tokens/s and peak extra memory of one optimizer step for REDI, DPO
  with an online reference, DPO with a cached reference and SimPO, each with our fused
  loss and with the naive full-logits loss, at each sequence length of the settings (all
  eight steps built first, then timed in interleaved rounds by ``measure.measure_cases``).
  "Peak extra" is above the memory kept between steps (weights, optimizer state, reference
  weights), which is reported beside it as ``state``.
* ``max-seq``: the longest sequence (one REDI pair) whose training step fits a budget of
  peak extra memory, naive vs ours.
"""

from __future__ import annotations

from functools import partial

from measure import measure_cases
from minimal_trainer import TrainStep, build_policy, pair_batch
from report import MS, PEAK, Column, Section, add_ratios
from settings import Settings

# (loss, DPO reference) pairs measured by the step section, and their row labels
VARIANTS = (("redi", None), ("dpo", "online"), ("dpo", "cached"), ("simpo", None))
IMPLS = ("ours", "naive")


def _label(loss, reference):
    return loss if reference is None else f"{loss} (ref {reference})"


def _new_step(settings: Settings, loss, impl, reference=None):
    model = build_policy(settings.model, settings.dtype, settings.device)
    return TrainStep(model, loss, impl, reference)


def _measure_steps(settings: Settings, seq_len) -> list[dict]:
    input_ids, labels = pair_batch(settings.step_pairs, seq_len, settings.model.vocab,
                                   settings.device)
    steps = {(loss, reference, impl): _new_step(settings, loss, impl, reference)
             for loss, reference in VARIANTS for impl in IMPLS}
    results = measure_cases(
        {key: lambda s=step: partial(s, input_ids, labels) for key, step in steps.items()},
        settings.device, settings.repeats, settings.warmup)
    tokens = input_ids.numel()
    return [dict(section="step", loss=_label(loss, reference), impl=impl, tokens=tokens,
                 pairs=settings.step_pairs, seq_len=seq_len, **result,
                 tokens_per_s=tokens / result["time_s"] if result["time_s"] else None,
                 state_bytes=steps[loss, reference, impl].state_bytes())
            for (loss, reference, impl), result in results.items()]


def run_steps(settings: Settings) -> list[dict]:
    rows = [row for seq_len in settings.step_seq_lens for row in _measure_steps(settings, seq_len)]
    add_ratios(rows, "naive", lambda r: r["impl"] == "naive", match=("tokens", "loss"))
    add_ratios(rows, "redi", lambda r: r["loss"] == "redi", match=("tokens", "impl"),
               keys=("time_s",))
    return rows


def longest_fitting(fits, start, resolution, limit):
    """Largest length in (0, limit] (a multiple of ``resolution``) with ``fits(length)``,
    for a monotone ``fits``: doubling from ``start``, then bisection. 0 if none fits."""
    lo, hi = 0, None
    length = start
    while length <= limit:
        if not fits(length):
            hi = length
            break
        lo, length = length, 2 * length
    if hi is None:
        return lo
    while hi - lo > resolution:
        mid = lo + (hi - lo) // 2 // resolution * resolution
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _longest_fitting_step(settings: Settings, impl) -> dict:
    vocab, device = settings.model.vocab, settings.device
    step = _new_step(settings, "redi", impl)
    step(*pair_batch(1, settings.search_resolution, vocab, device))  # optimizer state
    peaks = {}

    def fits(seq_len):
        batch = pair_batch(1, seq_len, vocab, device)
        result = measure_cases({seq_len: lambda: partial(step, *batch)}, device, repeats=0,
                               warmup=0)[seq_len]
        peaks[seq_len] = result["peak_bytes"]
        return result["status"] == "ok" and result["peak_bytes"] <= settings.budget_bytes

    longest = longest_fitting(fits, settings.search_start, settings.search_resolution,
                              settings.search_limit)
    return dict(section="max-seq", loss="redi", impl=impl, budget_bytes=settings.budget_bytes,
                max_seq_len=longest, capped=longest == settings.search_limit,
                tokens=2 * longest, status="ok", time_s=None, peak_bytes=peaks.get(longest),
                probes={str(k): v for k, v in sorted(peaks.items())})


def run_max_seq(settings: Settings) -> list[dict]:
    rows = [_longest_fitting_step(settings, impl) for impl in IMPLS]
    add_ratios(rows, "naive", lambda r: r["impl"] == "naive", match=("loss",),
               keys=("max_seq_len",))
    return rows


def describe_steps(s: Settings) -> str:
    m = s.model
    return (f"one AdamW step of Qwen2 (hidden {m.hidden}, {m.layers} layers, vocab {m.vocab}, "
            f"{str(s.dtype)[6:]}), {s.step_pairs} pairs, median of {s.repeats} on {s.device}")


def describe_max_seq(s: Settings) -> str:
    return (f"longest sequence (1 REDI pair) whose step fits {s.budget_bytes / 2**20:.0f} MiB "
            f"of peak extra memory, to {s.search_resolution} tokens, at most "
            f"{s.search_limit}, same model")


STEP_SECTION = Section(
    name="step", describe=describe_steps, run=run_steps, plotted=True,
    columns=(Column("tokens", "tokens"), Column("loss", "loss", left=True),
             Column("impl", "impl", left=True), MS,
             Column("tokens/s", "tokens_per_s", "{:.0f}"),
             Column("x naive", "time_s_vs_naive", "{:.2f}"),
             Column("x redi", "time_s_vs_redi", "{:.2f}"), PEAK,
             Column("mem x naive", "peak_bytes_vs_naive", "{:.3f}"),
             Column("state MiB", "state_bytes", "{:.1f}", scale=2**-20)))

MAX_SEQ_SECTION = Section(
    name="max-seq", describe=describe_max_seq, run=run_max_seq, plotted=False,
    columns=(Column("loss", "loss", left=True), Column("impl", "impl", left=True),
             Column("longest seq", "max_seq_len"), Column("x naive", "max_seq_len_vs_naive",
                                                          "{:.1f}"),
             Column("capped", "capped"), PEAK))
