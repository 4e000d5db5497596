"""The table ``mssd reproduce`` writes: our runs read back from MLflow beside the paper's numbers.

- ``trial_id(detector, row, seed)``: the run id each (detector, paper row, seed) trains under; the table
  finds the runs (and their seeds) by it;
- ``summarise``: one ``RowResult`` per (detector, paper row): mean ± sample std over the completed seeds
  (in %), and the paired delta to the same detector's baseline row, seed by seed, with its 95 % CI
  (``study.seed_deltas``);
- ``format_markdown`` / ``write_csv`` / ``plot_deltas`` / ``write_outputs``: ``tableN.md``, ``.csv``, ``.png``.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.config import RunConfig
from study.config import write_text_atomic
from study.paired_stats import PairedSummary
from study.paper_tables import METRICS, PaperRow, PaperTable
from study.seed_deltas import (
    DELTA_CSV_FIELDS,
    DELTA_LEGEND,
    NO_PAIRS,
    delta_csv,
    delta_rows,
    delta_summary,
    format_delta_cell,
    format_mean_sd,
    plural,
    table_digits,
)


@dataclass
class RowResult:
    detector: str  # the detector we trained
    paper_detector: str  # the detector of the paper's row we compare with
    row: PaperRow
    runs: int
    failed: int
    metrics: dict[str, tuple[float, float]]  # metric -> (mean, sample std) in %, NaN where no value
    # metric -> paired delta (points) to the same detector's baseline row over the seeds both completed;
    # NO_PAIRS for the baseline row itself.
    deltas: dict[str, PairedSummary] = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "row"


def trial_id(detector: str, row: str, seed: int) -> str:
    """The run of one (trained detector, paper row name, seed)."""
    return f"{_slug(detector)}-{_slug(row)}-seed{seed}"


# ---------------------------------------------------------------------------------------------
# the table


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [100 * v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def summarise(table: PaperTable, plan: list[tuple[str, str]], records: list[Any], seeds: list[int]
              ) -> list[RowResult]:
    """One ``RowResult`` per (detector, paper row), matched to MLflow records by trial id (which names
    the seed: the paired deltas pair a row's seed with the same seed of the detector's baseline row)."""
    by_id = {r.trial_id: r for r in records}
    results = []
    for trained, paper_detector in plan:
        per_seed = []
        for row in table.rows_for(paper_detector):
            mine = {s: by_id[t] for s in seeds for t in [trial_id(trained, row.name, s)] if t in by_id}
            done = {s: r for s, r in mine.items() if r.status == "completed"}
            metrics = {m: _mean_std([r.metrics.get(m, math.nan) for r in done.values()]) for m in table.metrics}
            results.append(RowResult(trained, paper_detector, row, len(done), len(seeds) - len(done), metrics))
            per_seed.append({m: {s: 100 * v for s, r in done.items() for v in [r.metrics.get(m, math.nan)]
                                 if isinstance(v, (int, float)) and math.isfinite(v)} for m in table.metrics})
        mine_rows = results[len(results) - len(per_seed):]
        base = next(values for r, values in zip(mine_rows, per_seed, strict=True) if r.row.baseline)
        for r, values in zip(mine_rows, per_seed, strict=True):
            r.deltas = {m: NO_PAIRS if r.row.baseline else delta_summary(values[m], base[m]) for m in table.metrics}
    return results


def recipe_text(cfg: RunConfig) -> str:
    """``128 px, batch 4, 1 epoch of at most 1 step``: what one detector's rows trained with."""
    steps = f" of at most {plural(cfg.train.max_steps_per_epoch, 'step')}" if cfg.train.max_steps_per_epoch else ""
    return f"{cfg.data.img_size} px, batch {cfg.train.batch_size}, {plural(cfg.train.epochs, 'epoch')}{steps}"


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _delta(value: float, base: float, digits: int = 2) -> str:
    if math.isnan(value) or math.isnan(base):
        return "n/a"
    return f"{value - base:+.{digits}f}"


def _baseline(rows: list[RowResult], row: RowResult) -> RowResult:
    return next(r for r in rows if r.detector == row.detector and r.row.baseline)


def _label(row: RowResult, rows: Sequence[RowResult]) -> str:
    """The row's name, with its detector when the table trained several."""
    return f"{row.detector}: {row.row.name}" if len({r.detector for r in rows}) > 1 else row.row.name


def format_markdown(table: PaperTable, rows: list[RowResult], context: list[str]) -> str:
    # One number format for the whole table (4 decimals only when every value is under 0.1 %).
    digits = table_digits([r.metrics[m][0] for r in rows for m in table.metrics]
                          + [r.deltas[m].mean for r in rows for m in table.metrics if m in r.deltas and r.deltas[m].n])
    header = ["detector", "row", "runs"]
    for m in table.metrics:
        header += [f"{METRICS[m]} ours", f"Δ{METRICS[m]} ours [95 % CI]", f"{METRICS[m]} paper", f"Δ{METRICS[m]} paper"]
    lines = [f"# Paper Table {table.number} reproduced: {table.title}", "", *context, "",
             "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for r in rows:
        base = _baseline(rows, r)
        runs = f"{r.runs}" + (f" ({r.failed} failed)" if r.failed else "")
        marked = r.row.baseline and "baseline" not in r.row.name.lower()
        cells = [r.detector, r.row.name + (" (baseline)" if marked else ""), runs]
        for m in table.metrics:
            mean, std = r.metrics[m]
            ours_delta = "baseline" if r.row.baseline else format_delta_cell(r.deltas.get(m, NO_PAIRS), digits, 1.0)
            cells += [format_mean_sd(mean, std, r.runs, digits), ours_delta, _fmt(r.row.paper[m], 1),
                      _delta(r.row.paper[m], base.row.paper[m], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Values in %. Ours: mean ± sample std over the completed seeds (one seed: n = 1, no spread); Δ "
              "ours: the row minus the same detector's baseline row, seed by seed (the runs differ only in the "
              "row's settings), in points: mean [95 % confidence interval, paired t]. Δ paper: the paper's row "
              "minus the paper's baseline (one number each, no interval).", DELTA_LEGEND]
    deltas = delta_rows([((r.detector, r.row.name), METRICS[m], r.deltas.get(m, NO_PAIRS)) for r in rows
                         if not r.row.baseline for m in table.metrics], ["detector", "row"], digits, 1.0)
    if deltas:
        lines += ["", "Our paired deltas against the baseline (points):", "", *deltas]
    return "\n".join(lines) + "\n"


def write_csv(table: PaperTable, rows: list[RowResult], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["detector", "paper_detector", "row", "baseline", "runs", "failed",
                         *(f"{m}_{k}" for m in table.metrics for k in ("mean", "std", "paper")),
                         *(f"{m}_{k}" for m in table.metrics for k in DELTA_CSV_FIELDS)])
        for r in rows:
            writer.writerow([r.detector, r.paper_detector, r.row.name, r.row.baseline, r.runs, r.failed,
                             *(v for m in table.metrics for v in (f"{r.metrics[m][0]:.4f}", f"{r.metrics[m][1]:.4f}",
                                                                  r.row.paper[m])),
                             *(v for m in table.metrics for v in delta_csv(r.deltas.get(m, NO_PAIRS)))])


def plot_deltas(table: PaperTable, rows: list[RowResult], path: Path, title: str) -> Any:
    """Per metric (a column), two panels of horizontal bars, one bar pair per row: the values (ours with
    std bars beside the paper's) and each row's delta against its baseline (ours with its paired 95 % CI
    beside the paper's). Horizontal bars keep every row's label level and apart however many rows the
    table has; the legend sits below the panels, the title is wrapped to the figure's width."""
    from study.report_plots import _pyplot, fit_title, save_figure

    plt = _pyplot()
    metrics = list(table.metrics)
    height = max(4.0, 1.6 + 0.55 * len(rows))
    fig, axes = plt.subplots(2, len(metrics), figsize=(max(6.5, 2.2 + 2.6 * len(metrics)), 2 * height * 0.55 + 1.2),
                             squeeze=False, sharey=True, layout="constrained")
    ys = list(range(len(rows)))
    labels = [_label(r, rows) for r in rows]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def finite(values: list[float]) -> list[float]:
        return [0 if math.isnan(v) else v for v in values]

    for column, m in enumerate(metrics):
        top, bottom = axes[0][column], axes[1][column]
        top.barh([y - 0.2 for y in ys], finite([r.metrics[m][0] for r in rows]), 0.4, color=colors[0],
                 xerr=finite([r.metrics[m][1] if r.runs > 1 else math.nan for r in rows]), capsize=2,
                 label="ours (mean ± std)")
        top.barh([y + 0.2 for y in ys], [r.row.paper[m] for r in rows], 0.4, color=colors[1], label="paper")
        top.set_title(f"{METRICS[m]} (%)", fontsize=9)
        deltas = [r.deltas.get(m, NO_PAIRS) for r in rows]
        drawn = [(y - 0.2, s) for y, s in zip(ys, deltas, strict=True) if s.n > 0]
        if drawn:
            low = [s.mean - s.ci_low if s.ci_low is not None else 0.0 for _, s in drawn]
            high = [s.ci_high - s.mean if s.ci_high is not None else 0.0 for _, s in drawn]
            bottom.barh([y for y, _ in drawn], [s.mean for _, s in drawn], 0.4, color=colors[0],
                        xerr=[low, high], capsize=2)
        bottom.barh([y + 0.2 for y in ys], [r.row.paper[m] - _baseline(rows, r).row.paper[m] for r in rows], 0.4,
                    color=colors[1])
        bottom.axvline(0, color="black", linewidth=0.6)
        bottom.set_title(f"Δ{METRICS[m]} vs own baseline (points)\nours: paired, 95 % CI", fontsize=9)
    for row_axes in axes:
        row_axes[0].set_yticks(ys, labels, fontsize=8)
    axes[0][0].invert_yaxis()  # the table's first row on top (once: every panel shares this y axis)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    fit_title(fig, title)
    save_figure(fig, path, dpi=100)
    return fig


def write_outputs(table: PaperTable, rows: list[RowResult], folder: Path, context: list[str], budget: str = ""
                  ) -> list[Path]:
    """``tableN.md``, ``tableN.csv`` and ``tableN.png`` in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    md, csv_path, png = (folder / f"table{table.number}.{ext}" for ext in ("md", "csv", "png"))
    write_text_atomic(md, format_markdown(table, rows, context))
    write_csv(table, rows, csv_path)
    detectors = ", ".join(dict.fromkeys(r.detector for r in rows))
    plot_deltas(table, rows, png, f"Paper Table {table.number} vs ours ({detectors}, budget {budget})")
    return [md, csv_path, png]
