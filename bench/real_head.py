"""Real head: the Qwen2.5-Math-1.5B lm_head (H=1536, V=151936) under a fixed memory budget.

One REDI pair (two T-token sequences, the first T/8 of each a prompt), fwd+bwd of head +
loss, for each implementation of ``IMPLS``:

* the longest T whose peak extra memory fits ``budget``: ``step_level.longest_fitting``
  (doubling from ``start``, bisection to ``resolution`` tokens, at most ``limit``), which
  jumps to ``limit`` when the first two probes predict that it fits (``_search``).
  The peak counts everything the call allocates, dW ([V, H] fp32 = 0.87 GiB at this shape)
  included. A search stopped by ``limit`` reports ``capped``; its rows then also carry
  ``predicted_max_seq_len``, the budget divided along the line through the two longest
  probes (an extrapolation from measured peaks, labelled as such, not a measurement);
* time per token at ``common_len`` (median of the settings' repeats, interleaved rounds),
  measured first, with the 3-matmul floor (logits, dx, dW as plain GEMMs on the same shapes:
  what any exact implementation must compute) timed in the same rounds; each row is also
  printed as a JSON line as soon as it is complete.

Liger-Kernel has no REDI loss, and its per-token fused cross-entropy is CUDA-only: its row
is its chunked SimPO (eager), whose chunk is one pair's whole [2T, V] logits, like any of
its pair losses. Cut Cross-Entropy runs its ``torch_compile`` implementation on CPU (its
``cce`` kernels need CUDA); a peer that cannot run gets a row saying why.

The ``head-time`` section (``TIME_SECTION``) is the time per token alone, of ``TIMED_ONLY``
and the floor, without the search: minutes instead of an hour on a CPU, so it can be rerun
when the machine is quiet.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json

from loss_cases import loss_cases, make_batch
from measure import measure_cases
from report import MS, PEAK, Column, Section, add_ratios
from settings import GiB, MiB, Settings
from step_level import longest_fitting
from token_cases import clear_grads

# implementation label -> the (loss, impl) key of ``loss_cases``
IMPLS = {
    "ours": ("redi", "ours[auto]"),
    "naive": ("redi", "naive"),
    "liger SimPO (chunked, eager)": ("simpo", "liger(compiled=False)"),
    "cut-cross-entropy[torch_compile]": ("redi", "cut-cross-entropy[torch_compile]"),
    "torch linear_cross_entropy": ("redi", "torch linear_cross_entropy"),
}
CCE = "cut-cross-entropy[torch_compile]"
FLOOR = "3-matmul floor"  # x W^T, dz W, dz^T x on the same shapes: timed, not searched
# The ``head-time`` section's implementations (the slow peers, torch's linear_cross_entropy
# and Liger's chunked SimPO on a CPU, are left to ``head``)
TIMED_ONLY = ("ours", "naive", CCE)



@dataclasses.dataclass(frozen=True)
class HeadShape:
    hidden: int
    vocab: int
    budget: int
    common_len: int
    start: int
    resolution: int
    limit: int
    peers_compiled: bool  # run Cut Cross-Entropy's torch_compile (tens of seconds to compile)


def head_shape(settings: Settings) -> HeadShape:
    if settings.profile == "quick":
        return HeadShape(hidden=64, vocab=2048, budget=24 * MiB, common_len=64, start=64,
                         resolution=64, limit=256, peers_compiled=False)
    # limit = start * 2^k: the doubling stops exactly there (a capped search says so)
    return HeadShape(hidden=1536, vocab=151936, budget=2 * GiB, common_len=128, start=256,
                     resolution=64, limit=2048, peers_compiled=True)


def _cases(settings: Settings, shape: HeadShape, seq_len: int):
    hidden, weight, labels = make_batch(1, seq_len, shape.hidden, shape.vocab, settings.dtype,
                                        settings.device)
    cce = ("torch_compile",) if shape.peers_compiled and _missing(CCE) is None else ()
    every = loss_cases(hidden, weight, labels, backends=("auto",), liger_compiled=(False,),
                       cce_impls=cce)
    builds = {label: every[key] for label, key in IMPLS.items() if key in every}
    builds[FLOOR] = every[("floor", "3 matmuls")]
    return builds, (hidden, weight)


def _missing(label, shape: HeadShape | None = None) -> str | None:
    """Why the peer ``label`` cannot run here, or None."""
    if label == CCE:
        if not importlib.util.find_spec("cut_cross_entropy"):
            return "cut-cross-entropy is not installed (pip install -e '.[bench]')"
        if shape is not None and not shape.peers_compiled:
            return "left out of --quick (torch.compile takes tens of seconds)"
    if label == "torch linear_cross_entropy":
        import torch.nn.functional as F

        if not hasattr(F, "linear_cross_entropy"):
            return "this torch has no F.linear_cross_entropy"
    return None


def _probe(settings, shape, label, seq_len, peaks):
    if seq_len in peaks:  # asked again by the search: the same answer
        return peaks[seq_len] is not None and peaks[seq_len] <= shape.budget
    builds, inputs = _cases(settings, shape, seq_len)
    # CCE's first call compiles (dynamic shapes: once); the others need no warm-up
    warmup = 1 if label == CCE and not peaks else 0
    result = measure_cases({label: builds[label]}, settings.device, repeats=0, warmup=warmup,
                           before_each=lambda: clear_grads(*inputs))[label]
    peaks[seq_len] = result["peak_bytes"]
    return result["status"] == "ok" and result["peak_bytes"] <= shape.budget


def _search(fits, peaks, shape):
    """``longest_fitting``, except that when ``start`` and ``2 start`` fit and the line
    through their peaks says ``limit`` fits too, ``limit`` is probed at once (one long probe
    instead of every doubling on the way). A length predicted not to fit is never probed
    past the doubling of a fitting one, so no probe needs much more than twice the budget."""
    if fits(shape.start) and fits(2 * shape.start) and 2 * shape.start < shape.limit:
        (t0, p0), (t1, p1) = sorted(peaks.items())[:2]
        if p0 + (p1 - p0) / (t1 - t0) * (shape.limit - t0) <= shape.budget \
                and fits(shape.limit):
            return shape.limit
    return longest_fitting(fits, shape.start, shape.resolution, shape.limit)


def _extrapolated(peaks, budget):
    fitting = sorted((t, p) for t, p in peaks.items() if p is not None and p <= budget)
    if len(fitting) < 2:
        return None
    (t0, p0), (t1, p1) = fitting[-2:]
    slope = (p1 - p0) / (t1 - t0)
    return int(t1 + (budget - p1) / slope) if slope > 0 else None


def _not_run(label, shape) -> dict | None:
    """The status and error of a peer that cannot run here (left out or missing), or None."""
    why = _missing(label, shape)
    if why is None:
        return None
    skipped = label == CCE and not shape.peers_compiled
    return dict(status="skipped" if skipped else "failed", error=why)


def _longest(settings, shape, label) -> dict:
    row = dict(section="head", loss="redi", impl=label, hidden=shape.hidden, vocab=shape.vocab,
               budget_bytes=shape.budget, time_s=None)
    not_run = _not_run(label, shape)
    if not_run:
        return dict(row, **not_run, peak_bytes=None, max_seq_len=None)
    peaks = {}
    fits = lambda t: _probe(settings, shape, label, t, peaks)  # noqa: E731
    try:
        longest = _search(fits, peaks, shape)
    except Exception as err:  # a peer that fails here is a result: keep the row
        return dict(row, status="failed", error=f"{type(err).__name__}: {err}"[:300],
                    peak_bytes=None, max_seq_len=None, probes=_mib(peaks))
    capped = longest == shape.limit
    return dict(row, status="ok", max_seq_len=longest, capped=capped,
                peak_bytes=peaks.get(longest), probes=_mib(peaks),
                predicted_max_seq_len=_extrapolated(peaks, shape.budget) if capped else None)


def _mib(peaks):
    return {str(t): None if p is None else round(p / MiB, 1) for t, p in sorted(peaks.items())}


def _time_per_token(settings, shape, labels) -> dict:
    builds, inputs = _cases(settings, shape, shape.common_len)
    builds = {label: build for label, build in builds.items() if label in labels}
    measure = lambda b: measure_cases(b, settings.device, settings.repeats,  # noqa: E731
                                      max(settings.warmup, 1),
                                      before_each=lambda: clear_grads(*inputs))
    try:
        results = measure(builds)
    except Exception:  # a peer failed: time the others side by side without it
        failed = {}
        for label in builds:
            try:
                measure({label: builds[label]})
            except Exception as err:
                failed[label] = f"{type(err).__name__}: {err}"[:300]
        results = measure({k: b for k, b in builds.items() if k not in failed})
        results.update({k: dict(time_s=None, times_s=[], peak_bytes=None, error=e)
                        for k, e in failed.items()})
    tokens = 2 * shape.common_len
    return {label: dict(time_s=r["time_s"], times_s=r["times_s"], common_len=shape.common_len,
                        common_peak_bytes=r["peak_bytes"],
                        ms_per_token=None if r["time_s"] is None else 1e3 * r["time_s"] / tokens)
            for label, r in results.items()}


def run(settings: Settings) -> list[dict]:
    shape = head_shape(settings)
    runnable = [label for label in IMPLS if _missing(label, shape) is None]
    timed = _time_per_token(settings, shape, [*runnable, FLOOR])
    print("head: time per token", json.dumps(timed), flush=True)
    rows = []
    for label in IMPLS:
        rows.append(dict(_longest(settings, shape, label), **timed.get(label, {})))
        print("head:", json.dumps(rows[-1]), flush=True)
    rows.append(dict(section="head", loss="redi", impl=FLOOR, hidden=shape.hidden,
                     vocab=shape.vocab, budget_bytes=shape.budget, status="ok",
                     error="timed only: it holds the whole [2T, V] logits", **timed[FLOOR]))
    add_ratios(rows, "naive", lambda r: r["impl"] == "naive", match=("loss",),
               keys=("max_seq_len", "time_s"))
    add_ratios(rows, "floor", lambda r: r["impl"] == FLOOR, match=("loss",), keys=("time_s",))
    return rows


def run_time_only(settings: Settings) -> list[dict]:
    """The ``head-time`` section: ``_time_per_token`` of ``TIMED_ONLY`` and the floor, in the
    same interleaved rounds; a peer that cannot run gets a row saying why."""
    shape = head_shape(settings)
    base = dict(section="head-time", loss="redi", hidden=shape.hidden, vocab=shape.vocab)
    not_run = {label: _not_run(label, shape) for label in TIMED_ONLY}
    timed = _time_per_token(settings, shape,
                            [label for label, why in not_run.items() if not why] + [FLOOR])
    rows = []
    for label in (*TIMED_ONLY, FLOOR):
        r = timed.get(label)
        rows.append(dict(base, impl=label, **not_run[label], time_s=None) if r is None else
                    dict(base, impl=label, status="ok" if r["time_s"] is not None else "failed",
                         **r))
    add_ratios(rows, "naive", lambda r: r["impl"] == "naive", match=("loss",), keys=("time_s",))
    add_ratios(rows, "floor", lambda r: r["impl"] == FLOOR, match=("loss",), keys=("time_s",))
    return rows


def describe(s: Settings) -> str:
    h = head_shape(s)
    return (f"one REDI pair, H={h.hidden} V={h.vocab} {str(s.dtype)[6:]}: longest T within "
            f"{h.budget / GiB:g} GiB of peak extra memory (to {h.resolution} tokens, at most "
            f"{h.limit}), time per token at T={h.common_len} (median of {s.repeats}) on "
            f"{s.device}")


SECTION = Section(
    name="head", describe=describe, run=run, plotted=False,
    columns=(Column("implementation", "impl", left=True), Column("status", "status", left=True),
             Column("longest T", "max_seq_len"), Column("capped", "capped"),
             Column("x naive", "max_seq_len_vs_naive", "{:.1f}"),
             Column("extrapolated T", "predicted_max_seq_len"), PEAK,
             Column("ms/token", "ms_per_token", "{:.2f}"), MS,
             Column("time x naive", "time_s_vs_naive", "{:.2f}"),
             Column("time x floor", "time_s_vs_floor", "{:.2f}"),
             Column("error", "error", left=True)))


def describe_time_only(s: Settings) -> str:
    h = head_shape(s)
    return (f"one REDI pair, H={h.hidden} V={h.vocab} {str(s.dtype)[6:]}: time per token at "
            f"T={h.common_len} (median of {s.repeats} interleaved rounds) of "
            f"{', '.join(TIMED_ONLY)} and the {FLOOR}, on {s.device}")


TIME_SECTION = Section(
    name="head-time", describe=describe_time_only, run=run_time_only, plotted=False,
    columns=(Column("implementation", "impl", left=True), Column("status", "status", left=True),
             Column("ms/token", "ms_per_token", "{:.2f}"), MS,
             Column("time x naive", "time_s_vs_naive", "{:.2f}"),
             Column("time x floor", "time_s_vs_floor", "{:.2f}"),
             Column("error", "error", left=True)))
