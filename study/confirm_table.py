"""The confirmation's statistics and files: ``confirm.md``, ``confirm.csv``, ``confirm-seeds.csv``,
``confirm.png`` (``mssd confirm``; the runs themselves are ``study.confirm``'s).

Every configuration is paired seed by seed with its baseline (the same config with the method off):
the delta on a seed is configuration minus baseline, and ``study.paired_stats`` gives the mean, the
95 % paired t interval and the two-sided p-value over the seeds where both runs completed. A
configuration beats the baseline when its interval lies wholly on the better side of 0 (above it for a
metric to maximise); the confirmed best is the beating configuration with the best mean delta, else
the baseline.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.config import write_text_atomic
from study.confirm_record import BASELINE
from study.mlflow_view import short_name
from study.paired_stats import PairedSummary, format_delta, paired_deltas, paired_summary

# (metric key, title); the study's own metric is shown first whatever it is.
AP_METRICS = (("map", "mAP"), ("ap50", "AP50"), ("ap75", "AP75"), ("aps", "APs"), ("apm", "APm"), ("apl", "APl"))


@dataclass
class ArmRuns:
    """One arm's runs on the confirmation seeds: seed -> that run's final metrics (completed runs only)."""

    label: str
    metrics: dict[int, dict[str, float]]
    failed: list[int] = field(default_factory=list)  # seeds whose run ended non-finite or in error

    def values(self, metric: str) -> dict[int, float]:
        return {seed: m[metric] for seed, m in self.metrics.items() if metric in m}


@dataclass
class ConfigurationResult:
    label: str  # the search trial's name, e.g. t03
    baseline: str  # label of the arm it is paired with
    values: dict[str, Any]  # its searched values
    search_value: float | None  # the study metric in the search: its trial's, or its mean over the search's seeds
    summaries: dict[str, PairedSummary]  # metric -> paired summary of (configuration - baseline)
    deltas: dict[str, dict[int, float]]  # metric -> seed -> delta


@dataclass
class Confirmation:
    study: str
    metric: str
    mode: str
    seeds: list[int]
    search_seeds: list[int]
    rows: list[ConfigurationResult]
    arms: dict[str, ArmRuns]
    best: str  # a row's label, or BASELINE

    @property
    def best_row(self) -> ConfigurationResult | None:
        return next((r for r in self.rows if r.label == self.best), None)

    def metrics(self) -> list[tuple[str, str]]:
        titles = dict(AP_METRICS)
        return [(self.metric, titles.get(self.metric, self.metric)),
                *((k, t) for k, t in AP_METRICS if k != self.metric)]

    def scale(self, metric: str) -> float:
        """AP metrics are fractions shown in points (%); any other metric is shown as logged."""
        return 100.0 if metric in dict(AP_METRICS) else 1.0


def beats_baseline(summary: PairedSummary, mode: str) -> bool:
    """The interval lies wholly on the better side of 0."""
    if not summary.excludes_zero:
        return False
    return summary.ci_low > 0 if mode == "max" else summary.ci_high < 0


def summarise(study: str, metric: str, mode: str, seeds: list[int], search_seeds: list[int],
              configurations: list[dict[str, Any]], arms: dict[str, ArmRuns]) -> Confirmation:
    """``configurations``: dicts with ``label``, ``baseline``, ``values``, ``search_value``, best first."""
    keys = [metric, *(k for k, _ in AP_METRICS if k != metric)]
    rows = []
    for c in configurations:
        arm, base = arms[c["label"]], arms[c["baseline"]]
        deltas = {k: paired_deltas(arm.values(k), base.values(k)) for k in keys}
        rows.append(ConfigurationResult(c["label"], c["baseline"], c["values"], c["search_value"],
                                        {k: paired_summary(list(d.values())) for k, d in deltas.items()}, deltas))
    sign = 1.0 if mode == "max" else -1.0
    winners = [r for r in rows if beats_baseline(r.summaries[metric], mode)]
    best = max(winners, key=lambda r: sign * r.summaries[metric].mean).label if winners else BASELINE
    return Confirmation(study, metric, mode, seeds, search_seeds, rows, arms, best)


def verdict(c: Confirmation) -> str:
    seeds = ", ".join(str(s) for s in c.seeds)
    row = c.best_row
    if row is None:
        return (f"No configuration beats the baseline beyond seed noise on seeds {seeds}: the best stays the "
                "baseline.")
    s = row.summaries[c.metric]
    return (f"Confirmed best: {row.label} ({_values_text(row.values, row.values)}), {c.metric} delta "
            f"{format_delta(s, scale=c.scale(c.metric))} (95 % CI over seeds {seeds}, p = {_p(s)}).")


def _values_text(values: dict[str, Any], keys: Any) -> str:
    return " ".join(f"{short_name(k, list(keys))}={_short(v)}" for k, v in values.items()) or "(no searched value)"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def _p(s: PairedSummary) -> str:
    return "-" if s.p_value is None else f"{s.p_value:.2g}" if s.p_value < 0.01 else f"{s.p_value:.2f}"


def _mean_sd(values: list[float], scale: float) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return f"{scale * mean:.2f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
    return f"{scale * mean:.2f} ± {scale * sd:.2f}"


def format_markdown(c: Confirmation, title: str = "") -> str:
    m, title_m = c.metrics()[0]
    scale = c.scale(m)
    unit = " (%)" if scale == 100.0 else ""
    keys = [k for r in c.rows for k in r.values]
    lines = [f"**{title}**", ""] if title else []
    header = ["configuration", "searched values", f"search {title_m}{unit}", "baseline", f"baseline {title_m}{unit}",
              f"{title_m}{unit}", f"Δ {title_m} [95 % CI]", "p", "n", "beats baseline"]
    lines += ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for r in c.rows:
        s = r.summaries[m]
        search = "n/a" if r.search_value is None else f"{scale * r.search_value:.2f}"
        cells = [r.label, _values_text(r.values, keys), search, r.baseline,
                 _mean_sd(list(c.arms[r.baseline].values(m).values()), scale),
                 _mean_sd(list(c.arms[r.label].values(m).values()), scale),
                 format_delta(s, scale=scale), _p(s), str(s.n), "✓" if beats_baseline(s, c.mode) else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", verdict(c), ""]
    others = c.metrics()[1:]
    if others:
        lines += ["Other metrics: Δ [95 % CI] in points; * where the interval excludes 0.", ""]
        header = ["configuration", *(f"Δ {t}" for _, t in others)]
        lines += ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
        for r in c.rows:
            cells = [format_delta(r.summaries[k], scale=c.scale(k)) + (" *" if r.summaries[k].excludes_zero else "")
                     for k, _ in others]
            lines.append("| " + " | ".join([r.label, *cells]) + " |")
        lines.append("")
    arms = list(c.arms)
    lines += [f"Per seed {title_m}{unit} (a blank cell: the run did not complete).", ""]
    lines += ["| seed | " + " | ".join(arms) + " |", "| --- | " + " | ".join("---" for _ in arms) + " |"]
    for seed in c.seeds:
        cells = [f"{scale * c.arms[a].metrics[seed][m]:.2f}" if m in c.arms[a].metrics.get(seed, {}) else ""
                 for a in arms]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    failed = [f"{a} seed {s}" for a in arms for s in c.arms[a].failed]
    lines += ["", f"Search seeds: {', '.join(str(s) for s in c.search_seeds)}; confirmation seeds: "
              f"{', '.join(str(s) for s in c.seeds)} (none shared). Δ: configuration minus its baseline on the "
              "same seed; mean and 95 % CI by the paired t distribution over the seeds where both completed; "
              "p: two-sided, null hypothesis of no difference. An interval that contains 0 means no "
              "measurable effect at this number of seeds, whatever the sign of the mean."]
    if failed:
        lines += ["", "Runs that did not complete (left out of the pairs): " + ", ".join(failed) + "."]
    return "\n".join(lines) + "\n"


def write_csv(c: Confirmation, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["configuration", "baseline", "metric", "n", "mean_delta", "sd", "ci_low", "ci_high",
                         "p_value", "beats_baseline", "confirmed_best", "searched_values"])
        for r in c.rows:
            for k, _ in c.metrics():
                s = r.summaries[k]
                writer.writerow([r.label, r.baseline, k, s.n, _num(s.mean), _num(s.sd), _num(s.ci_low),
                                 _num(s.ci_high), _num(s.p_value), beats_baseline(s, c.mode), r.label == c.best,
                                 ";".join(f"{key}={v}" for key, v in r.values.items())])


def write_seed_csv(c: Confirmation, path: Path) -> None:
    keys = [k for k, _ in c.metrics()]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arm", "seed", "status", *keys])
        for label, arm in c.arms.items():
            for seed in c.seeds:
                status = "completed" if seed in arm.metrics else "failed" if seed in arm.failed else "missing"
                writer.writerow([label, seed, status, *(_num(arm.metrics.get(seed, {}).get(k)) for k in keys)])


def _num(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"


def plot_intervals(c: Confirmation, path: Path, title: str = "") -> None:
    """Each configuration's mean delta with its interval, a line at 0, the per-seed deltas as dots;
    filled where the interval excludes 0, hollow where it does not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, title_m = c.metrics()[0]
    scale = c.scale(m)
    fig, ax = plt.subplots(figsize=(7.5, 1.6 + 0.6 * max(len(c.rows), 1)))
    for y, r in enumerate(reversed(c.rows)):
        s = r.summaries[m]
        ax.scatter([scale * d for d in r.deltas[m].values()], [y + 0.18] * len(r.deltas[m]), s=14, color="0.55",
                   zorder=2, label="per seed" if y == 0 else None)
        if s.n == 0:
            continue
        beyond = beats_baseline(s, c.mode) or s.excludes_zero
        colour = "tab:green" if beats_baseline(s, c.mode) else "tab:red" if beyond else "tab:blue"
        if s.ci_low is not None:
            ax.plot([scale * s.ci_low, scale * s.ci_high], [y, y], color=colour, lw=2.5, zorder=3)
        ax.scatter([scale * s.mean], [y], s=60, zorder=4, edgecolors=colour,
                   facecolors=colour if beyond else "white", linewidths=2)
        if r.label == c.best:
            ax.annotate("confirmed best", (scale * s.mean, y), xytext=(0, -14), textcoords="offset points",
                        ha="center", fontsize=8, color=colour)
    ax.axvline(0.0, color="k", lw=1)
    ax.set_yticks(range(len(c.rows)), [r.label for r in reversed(c.rows)])
    ax.set_ylim(-0.6, len(c.rows) - 0.4)
    unit = " (points)" if scale == 100.0 else ""
    ax.set_xlabel(f"Δ {title_m} vs baseline{unit}: mean and 95 % CI (filled: CI excludes 0)")
    ax.set_title(title or f"mssd confirm {c.study}", fontsize=9)
    if c.rows:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(c: Confirmation, folder: Path, title: str = "") -> list[Path]:
    """``confirm.md``, ``confirm.csv``, ``confirm-seeds.csv`` and ``confirm.png`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    md, csv_path, seeds_csv, png = (folder / n for n in ("confirm.md", "confirm.csv", "confirm-seeds.csv",
                                                          "confirm.png"))
    write_text_atomic(md, format_markdown(c, title))
    write_csv(c, csv_path)
    write_seed_csv(c, seeds_csv)
    plot_intervals(c, png, title)
    return [md, csv_path, seeds_csv, png]
