"""Loss level: fwd+bwd of the head and the REDI / DPO / SimPO losses over a sweep of tokens.

Every case of ``loss_cases`` at every token count of the settings, measured side by side by
``measure.measure_cases`` (the gradients of the previous call dropped before each memory
measurement, so every peak counts the case's own dx and dW), with ratios of time and peak
memory to the 3-matmul floor at the same token count and to the naive full-logits
implementation of the same loss.
"""

from __future__ import annotations

from loss_cases import loss_cases, make_batch
from measure import measure_cases
from report import MS, PEAK, Column, Section, add_ratios
from settings import Settings
from token_cases import clear_grads


def _measure_at(settings: Settings, tokens: int) -> list[dict]:
    pairs = tokens // (2 * settings.seq_len)
    if pairs < 1 or pairs * 2 * settings.seq_len != tokens:
        raise ValueError(f"tokens={tokens} is not a multiple of 2 * seq_len "
                         f"({2 * settings.seq_len})")
    hidden, weight, labels = make_batch(pairs, settings.seq_len, settings.hidden,
                                        settings.vocab, settings.dtype, settings.device)
    cases = loss_cases(hidden, weight, labels, settings.backends, settings.liger_compiled)
    results = measure_cases(cases, settings.device, settings.repeats, settings.warmup,
                            before_each=lambda: clear_grads(hidden, weight))
    return [dict(section="loss", loss=loss, impl=impl, tokens=tokens, pairs=pairs,
                 seq_len=settings.seq_len, **result) for (loss, impl), result in results.items()]


def run(settings: Settings) -> list[dict]:
    rows = [row for tokens in settings.tokens for row in _measure_at(settings, tokens)]
    add_ratios(rows, "floor", lambda r: r["loss"] == "floor", match=("tokens",))
    add_ratios(rows, "naive", lambda r: r["impl"] == "naive", match=("tokens", "loss"))
    return rows


def describe(s: Settings) -> str:
    return (f"fwd+bwd of head + loss, H={s.hidden} V={s.vocab} {str(s.dtype)[6:]}, pairs of "
            f"{s.seq_len}-token sequences, median of {s.repeats} on {s.device}")


SECTION = Section(
    name="loss", describe=describe, run=run, plotted=True,
    columns=(Column("tokens", "tokens"), Column("loss", "loss", left=True),
             Column("implementation", "impl", left=True), MS,
             Column("x floor", "time_s_vs_floor", "{:.2f}"),
             Column("x naive", "time_s_vs_naive", "{:.2f}"), PEAK,
             Column("mem x floor", "peak_bytes_vs_floor", "{:.2f}"),
             Column("mem x naive", "peak_bytes_vs_naive", "{:.3f}")))
