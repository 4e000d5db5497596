"""The report's plots (matplotlib, Agg backend): each function draws one PNG from plain data.

Every function returns a ``Plot``: the file, and what it shows in words (the series with their
point counts, each axis' tick labels, the colour bar's label), so that the report can say what a
plot holds and tests can check it without reading pixels.

Sizes: 7-9 inches wide at 120 dpi (about 840-1080 px), 9-10 pt text: readable in a browser or an
MLflow artifact preview without zooming. Layout rules every plot of the platform follows (the study
tables' plots use the helpers too): a title wrapped to the figure's width (``fit_title``), legends
outside the bars they describe, whole-number epoch ticks (``integer_epochs``), and axis tick labels
drawn above the lines they label.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DPI = 120
FONT_SIZE = 9
STATUS_STYLE = {  # completed trials ran every epoch; early-stopped ones stopped at a rung (fewer epochs)
    "completed": {"color": "tab:blue", "marker": "o", "label": "completed"},
    "early_stopped": {"color": "tab:orange", "marker": "v", "label": "early-stopped"},
}


@dataclass
class Plot:
    path: Path
    title: str
    series: dict[str, int] = field(default_factory=dict)  # legend label -> points or lines drawn
    axes: dict[str, list[str]] = field(default_factory=dict)  # axis name -> tick labels shown
    colorbar: str | None = None
    figure: Any = None  # the matplotlib figure (closed once saved; tests read its artists' positions)


@dataclass(frozen=True)
class Axis:
    """One parameter (or the metric) as an axis: its kind decides the scale and the ticks."""

    name: str
    kind: str = "linear"  # linear | log | categorical
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrialPoint:
    """One trial as the plots see it: its status, epochs run, parameter values and final metric."""

    label: str
    status: str
    epochs: int
    values: dict[str, float | str | None]
    metric: float


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": FONT_SIZE})
    return plt


def _save(fig, path: Path) -> None:
    save_figure(fig, path)


def save_figure(fig: Any, path: Path, dpi: int = DPI) -> None:
    """Lay out (tight, unless the figure has its own layout engine), write and close the figure."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)


def fit_title(fig: Any, text: str, fontsize: float = FONT_SIZE) -> Any:
    """The figure's title, wrapped onto as many lines as its width needs (a one-line title wider than
    the figure is clipped at both ends: a reader loses the detectors it names)."""
    # An average glyph of the default sans-serif font is about 0.6 em wide; 0.65 leaves a margin.
    chars = max(20, int(fig.get_figwidth() * 72 / (0.65 * fontsize)))
    return fig.suptitle("\n".join(textwrap.wrap(text, chars)), fontsize=fontsize)


def note_all_zero(ax: Any, values: Sequence[float], what: str) -> bool:
    """Say so on the panel when every value is 0 or missing: bars of height 0 draw nothing, and an
    empty panel reads as a broken plot rather than as "no detection learned" (a smoke budget)."""
    if any(isinstance(v, (int, float)) and math.isfinite(v) and v != 0 for v in values):
        return False
    # Above the middle: a delta panel draws its zero line across the centre.
    ax.text(0.5, 0.75, f"every {what} is 0", transform=ax.transAxes, ha="center", va="center", color="0.35")
    return True


def integer_epochs(ax: Any, epochs: Sequence[float]) -> None:
    """Whole-number ticks on an epoch axis; one epoch gets its own tick alone, not an axis of 0.96-1.04."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    finite = [e for e in epochs if isinstance(e, (int, float)) and math.isfinite(e)]
    if finite and min(finite) == max(finite):  # one epoch: its tick alone, not epochs 0 and 2 that never ran
        ax.set_xlim(finite[0] - 0.5, finite[0] + 0.5)
        ax.set_xticks([finite[0]])


def format_value(value: float) -> str:
    """4 significant digits, no trailing zeros: axis ticks and tables read like the search space."""
    return f"{value:.4g}"


def _position(axis: Axis, value) -> float | None:
    """Where a raw value sits on the axis' own scale (log10 for log axes, the index for categories)."""
    if value is None:
        return None
    if axis.kind == "categorical":
        return float(axis.categories.index(str(value))) if str(value) in axis.categories else None
    value = float(value)
    if axis.kind == "log":
        return math.log10(value) if value > 0 else None
    return value


def _ticks(axis: Axis, lo: float, hi: float, count: int = 5) -> list[tuple[float, str]]:
    """(position on the axis' scale, real value as text): the real values a reader needs."""
    if axis.kind == "categorical":
        return [(float(i), c) for i, c in enumerate(axis.categories)]
    if hi == lo:
        return [(lo, format_value(10 ** lo if axis.kind == "log" else lo))]
    steps = [lo + (hi - lo) * i / (count - 1) for i in range(count)]
    return [(s, format_value(10 ** s if axis.kind == "log" else s)) for s in steps]


def metric_vs_param(path: Path, axis: Axis, points: Sequence[TrialPoint], metric: str) -> Plot:
    """The metric of each trial against one parameter; completed and early-stopped trials apart.

    An early-stopped trial's metric is from fewer epochs than a completed one's, so the two are
    drawn with different markers and the legend says at which epochs; each early-stopped point is
    labelled with its epoch count.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot = Plot(path, f"{metric} vs {axis.name}")
    for status, style in STATUS_STYLE.items():
        pts = [(p, _position(axis, p.values.get(axis.name))) for p in points if p.status == status]
        pts = [(p, x) for p, x in pts if x is not None]
        if not pts:
            continue
        epochs = sorted({p.epochs for p, _ in pts})
        span = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}"
        label = f"{style['label']} ({len(pts)}, {span})"
        xs = [10 ** x if axis.kind == "log" else x for _, x in pts]
        ax.scatter(xs, [p.metric for p, _ in pts], s=40, color=style["color"], marker=style["marker"], label=label,
                   edgecolors="black", linewidths=0.4, zorder=3)
        if status == "early_stopped":
            for (p, _), x in zip(pts, xs, strict=True):
                ax.annotate(f"e{p.epochs}", (x, p.metric), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=style["color"])
        plot.series[label] = len(pts)
    if axis.kind == "log":
        ax.set_xscale("log")
    if axis.kind == "categorical":
        ax.set_xticks(range(len(axis.categories)), axis.categories)
    ax.set_xlabel(axis.name + (" (log scale)" if axis.kind == "log" else ""))
    ax.set_ylabel(metric)
    ax.set_title(plot.title)
    ax.grid(alpha=0.3)
    if plot.series:
        ax.legend(loc="best")
    _save(fig, path)
    return plot


def parallel_coordinates(path: Path, axes: Sequence[Axis], points: Sequence[TrialPoint], metric: str) -> Plot:
    """Each trial a line across the parameters and the metric; every axis shows its real values.

    Each axis is scaled to its own range (log10 for log parameters) and carries its own tick labels
    in real units; completed trials are coloured by the metric (colour bar), early-stopped ones are
    drawn as thin grey dashes (their metric is from fewer epochs).
    """
    plt = _pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    columns = [*axes, Axis(metric)]
    rows = [[_position(a, p.values.get(a.name)) for a in axes] + [p.metric] for p in points]
    ranges = []
    for j, column in enumerate(columns):
        col = [r[j] for r in rows if r[j] is not None]
        if column.kind == "categorical":
            ranges.append((0.0, float(max(len(column.categories) - 1, 1))))
        else:
            ranges.append((min(col), max(col)) if col else (0.0, 1.0))

    def scaled(j: int, v: float | None) -> float:
        lo, hi = ranges[j]
        return math.nan if v is None else (0.5 if hi == lo else (v - lo) / (hi - lo))

    fig, ax = plt.subplots(figsize=(max(7.0, 1.8 * len(columns)), 5))
    plot = Plot(path, f"parallel coordinates (colour: {metric} of completed trials)", colorbar=metric, figure=fig)
    completed = [m for p, m in zip(points, rows, strict=True) if p.status == "completed"]
    norm = Normalize(min((r[-1] for r in completed), default=0.0), max((r[-1] for r in completed), default=1.0))
    cmap = plt.get_cmap("viridis")
    xs = list(range(len(columns)))
    for p, row in zip(points, rows, strict=True):
        ys = [scaled(j, v) for j, v in enumerate(row)]
        if p.status == "completed":
            ax.plot(xs, ys, color=cmap(norm(row[-1])), linewidth=1.8, alpha=0.9, zorder=3)
        else:
            ax.plot(xs, ys, color="0.6", linewidth=0.9, linestyle="--", alpha=0.8, zorder=2)
    plot.series = {"completed": len(completed), "early-stopped (grey, dashed)": len(rows) - len(completed)}
    for j, column in enumerate(columns):
        ax.axvline(j, color="black", linewidth=0.8, zorder=1)
        lo, hi = ranges[j]
        labels = []
        for pos, text in _ticks(column, lo, hi):
            y = scaled(j, pos)
            # Opaque and above the trial lines (zorder 2-3): a line crossing a translucent label makes
            # its digits unreadable, and lines converge exactly at a categorical value's label.
            ax.text(j + 0.04, y, text, fontsize=7.5, va="center", ha="left",
                    bbox={"facecolor": "white", "edgecolor": "0.7", "linewidth": 0.5, "alpha": 1.0, "pad": 1.0},
                    zorder=5)
            ax.plot([j - 0.03, j], [y, y], color="black", linewidth=0.8, zorder=4)
            labels.append(text)
        plot.axes[column.name] = labels
    ax.set_xticks(xs, [c.name + (" (log)" if c.kind == "log" else "") for c in columns], rotation=15, ha="right")
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(columns) - 0.5)
    ax.set_ylim(-0.05, 1.05)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(plot.title)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    bar.set_label(metric)
    _save(fig, path)
    return plot


def learning_curves(path: Path, curves: dict[str, list[tuple[int, float]]], metric: str) -> Plot:
    """The metric per epoch of a few trials (legend: the trial's name)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot = Plot(path, f"{metric} per epoch, top {len(curves)} trials", figure=fig)
    for label, history in curves.items():
        ax.plot([e for e, _ in history], [v for _, v in history], marker="o", markersize=4, label=label)
        plot.series[label] = len(history)
    integer_epochs(ax, [e for history in curves.values() for e, _ in history])
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(plot.title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="best", fontsize=8)
    _save(fig, path)
    return plot


def importance_bars(path: Path, importances: dict[str, float], metric: str, trials: int) -> Plot:
    plt = _pyplot()
    names = list(importances)[::-1]  # most important on top
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * len(names)))
    plot = Plot(path, f"fANOVA importance for {metric} ({trials} completed trials)")
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(importances[n], i, f" {importances[n]:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance (share of the metric's variance)")
    ax.set_xlim(0, max(1.0, max(importances.values(), default=0) * 1.15))
    ax.set_title(plot.title)
    plot.series = {n: 1 for n in importances}
    _save(fig, path)
    return plot
