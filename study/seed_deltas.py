"""Paired deltas in the comparison tables (``mssd ablate``, ``mssd compare``, ``mssd reproduce``).

A table row (a variant, a method, a paper row) and its baseline (the baseline row of the same table and
detector) ran on the same seeds and differ only in the setting under test, so each seed gives one
paired delta; ``study.paired_stats`` turns them into a mean with a 95 % confidence interval and a
p-value. This module is what the three tables share on top of it:

- ``seed_values``: ``{seed: metric}`` of a row's completed runs, the seed read from the run's logged
  ``seed`` parameter (a run without one cannot be paired and stays out of the deltas);
- ``delta_summary``: the paired summary of a row against its baseline for one metric;
- ``format_mean_sd`` / ``format_delta_cell`` / ``table_digits``: one number format per table, ``n = 1``
  said in words instead of a ``± 0.00`` that would read as "no seed noise"; ``plural`` / ``seed_range``
  for the tables' headings ("1 epoch", "seed 0");
- ``delta_rows`` / ``DELTA_LEGEND`` / ``delta_csv``: the long table of every delta (n, mean, CI, p);
- ``draw_deltas``: a plot panel of the deltas with their intervals as error bars.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from study.paired_stats import PairedSummary, format_delta, paired_deltas, paired_summary

MARK = "*"
DELTA_LEGEND = f"`{MARK}`: the 95 % CI of the paired delta excludes 0 (a difference beyond seed noise)."
DELTA_CSV_FIELDS = ("delta_n", "delta_mean", "delta_ci_low", "delta_ci_high", "delta_p")
NO_PAIRS = PairedSummary(0, math.nan, None, None, None, None)


def seed_of(record: Any) -> int | None:
    """The seed a run record logged (``params["seed"]``, as ``flatten_config`` writes it); None when absent."""
    text = getattr(record, "params", {}).get("seed")
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def seed_values(records: Iterable[Any], metric: str, seeds: Mapping[str, int] | None = None) -> dict[int, float]:
    """``{seed: value of metric}`` over the completed records with a seed and a finite value.

    ``seeds``: run id -> seed, for callers that know the seed from the run's name rather than its params.
    """
    values: dict[int, float] = {}
    for record in records:
        if record.status != "completed":
            continue
        seed = (seeds or {}).get(record.run_id, seed_of(record))
        value = record.metrics.get(metric, math.nan)
        if seed is not None and isinstance(value, (int, float)) and math.isfinite(value):
            values[seed] = float(value)
    return values


def delta_summary(treated: Mapping[int, float], baseline: Mapping[int, float]) -> PairedSummary:
    """The paired summary (treated minus baseline, per shared seed) of one metric."""
    return paired_summary(list(paired_deltas(treated, baseline).values()))


def table_digits(values: Iterable[float]) -> int:
    """Decimals for every number of one table: 2, or 4 when the table's largest value (already in the
    table's unit) is under 0.1, where 2 would print every cell as 0.00 (CPU budgets)."""
    finite = [abs(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return 4 if finite and 0 < max(finite) < 0.1 else 2


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def seed_range(seeds: Sequence[int]) -> str:
    """``seed 0`` or ``seeds 0..2``."""
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}..{seeds[-1]}"


def format_mean_sd(mean: float, sd: float, n: int, digits: int = 2) -> str:
    """``12.34 ± 0.56`` (sample sd over n seeds); ``12.34 (n = 1)`` for one seed, whose spread is
    unknown rather than zero; ``n/a`` without a value."""
    if n < 1 or math.isnan(mean):
        return "n/a"
    if n == 1:
        return f"{mean:.{digits}f} (n = 1)"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def format_delta_cell(summary: PairedSummary, digits: int = 2, scale: float = 100.0) -> str:
    """``+1.23 [-0.40, +2.86]``, with `` *`` when the interval excludes 0; ``n/a`` without any pair."""
    if summary.n == 0:
        return "n/a"
    return format_delta(summary, digits, scale) + (f" {MARK}" if summary.excludes_zero else "")


def _scaled(value: float | None, scale: float, digits: int, signed: bool = True) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value * scale:+.{digits}f}" if signed else f"{value * scale:.{digits}f}"


def format_p(p: float | None) -> str:
    """The p-value with 3 significant digits (``<0.001`` below that); ``n/a`` without an interval."""
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def delta_rows(entries: Sequence[tuple[Sequence[str], str, PairedSummary]], label_header: Sequence[str],
               digits: int = 2, scale: float = 100.0) -> list[str]:
    """The long Markdown table of paired deltas: one line per (row, metric).

    ``entries``: ``(row labels, metric title, summary)``; ``label_header``: the titles of the row labels.
    Entries without a pair are left out (the main table says n/a); none left: no table (``[]``).
    """
    header = [*label_header, "metric", "pairs (n)", "Δ mean", "95 % CI", "p", "CI excludes 0"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for labels, metric, s in entries:
        if s.n == 0:  # no pair at all: the main table already says n/a
            continue
        ci = (f"[{_scaled(s.ci_low, scale, digits)}, {_scaled(s.ci_high, scale, digits)}]"
              if s.ci_low is not None else ("n = 1: no interval" if s.n == 1 else "n/a"))
        cells = [*labels, metric, str(s.n), _scaled(s.mean if s.n else None, scale, digits), ci, format_p(s.p_value),
                 MARK if s.excludes_zero else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def delta_csv(summary: PairedSummary, scale: float = 1.0) -> list[str]:
    """``DELTA_CSV_FIELDS`` values of one summary (mean and interval times ``scale``; empty when absent)."""
    def num(v: float | None) -> str:
        return "" if v is None or math.isnan(v) else f"{v * scale:.6f}"

    return [str(summary.n), num(summary.mean if summary.n else None), num(summary.ci_low), num(summary.ci_high),
            "" if summary.p_value is None else f"{summary.p_value:.6g}"]


def draw_deltas(ax: Any, xs: Sequence[float], summaries: Sequence[PairedSummary], width: float, scale: float,
                label: str, color: Any = None) -> int:
    """Bars of the mean deltas with their 95 % CIs as error bars on ``ax``; n = 1 rows get a bar without
    an interval, rows without a pair nothing. Returns the number of bars drawn."""
    drawn = [(x, s) for x, s in zip(xs, summaries, strict=True) if s.n > 0]
    if not drawn:
        return 0
    means = [s.mean * scale for _, s in drawn]
    low = [(s.mean - s.ci_low) * scale if s.ci_low is not None else 0.0 for _, s in drawn]
    high = [(s.ci_high - s.mean) * scale if s.ci_high is not None else 0.0 for _, s in drawn]
    ax.bar([x for x, _ in drawn], means, width, yerr=[low, high], capsize=3, label=label, color=color)
    ax.axhline(0.0, color="black", linewidth=0.6)
    return len(drawn)
