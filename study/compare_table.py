"""The table of ``mssd compare`` (paper Table 4): one row per student backbone x method, from MLflow.

``summarise(records, methods, backbones, costs)`` groups the study's child runs by the ``losses.method``
and ``detector.name`` they logged; only ``completed`` runs enter the statistics (mean +- sample std
over the seeds), and each method's paired deltas to the same backbone's baseline, seed by seed, with
their 95 % CIs and p-values (``study.seed_deltas``). Each row also carries its method's cost (``MethodCost``, counted by
``study.compare.method_costs``): the training-only parameters and GFLOPs it adds to the student
(adapters, projectors, LGD's label encoder), the frozen teacher's forward GFLOPs, and the step time
(``time/train_steps`` of the runs' last epoch) as a ratio to the same backbone's baseline.

``write_outputs`` writes ``compare.md``, ``compare.csv`` and ``compare.png`` (mAP bars with std error
bars per backbone, the mAP deltas with their CIs, and the step-time ratios; ``study.report_plots`` style).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from study.config import write_text_atomic
from study.grid_runs import mean_std
from study.paired_stats import PairedSummary
from study.report_plots import Plot, _pyplot, fit_title, note_all_zero, save_figure
from study.seed_deltas import (
    DELTA_CSV_FIELDS,
    DELTA_LEGEND,
    NO_PAIRS,
    delta_csv,
    delta_rows,
    delta_summary,
    draw_deltas,
    format_delta_cell,
    format_mean_sd,
    seed_values,
    table_digits,
)

METHOD_KEY, DETECTOR_KEY = "losses.method", "detector.name"
BASELINE = "baseline"  # the method the deltas and step-time ratios are taken against
STEP_TIME_KEY = "time/train_steps"  # seconds of the epoch's training steps (trainer.run_epoch)
# (metric key in the trainer's results, column title)
METRICS = (("map", "mAP"), ("ap50", "AP50"), ("aps", "APs"), ("apm", "APm"), ("apl", "APl"))


@dataclass(frozen=True)
class MethodCost:
    """What a method adds to the student's training (the exported detector is the student alone)."""

    training_params: int = 0  # training-only modules: adapters, projectors, label encoder
    training_gflops: float = 0.0  # their forward, one image at the config's input size
    teacher: str | None = None  # the frozen teacher detector, if the method has one
    teacher_params: int = 0
    teacher_gflops: float = 0.0  # the teacher's forward on the same image: part of every training step


@dataclass
class CompareRow:
    backbone: str  # cspdarknet | convnext
    detector: str  # the student detector trained
    method: str  # the command's method name (baseline, kd, ...)
    runs: int  # completed runs in the statistics
    failed: int  # runs that did not complete (non-finite loss, error)
    metrics: dict[str, tuple[float, float]]  # metric -> (mean, sample std) as fractions; NaN: no value
    step_time_s: tuple[float, float] = (math.nan, math.nan)  # last epoch's training-steps seconds
    step_time_ratio: float = math.nan  # mean step time / the backbone's baseline mean (NaN: no baseline)
    cost: MethodCost = field(default_factory=MethodCost)
    # metric -> paired delta to the backbone's baseline over the seeds both completed (fractions);
    # NO_PAIRS for the baseline itself or when the table has no baseline.
    deltas: dict[str, PairedSummary] = field(default_factory=dict)

    @property
    def extra_gflops(self) -> float:
        """Per-image GFLOPs a training step adds to the student's: training-only modules + teacher forward."""
        return self.cost.training_gflops + self.cost.teacher_gflops


def summarise(records: Sequence, methods: Sequence[tuple[str, str]], backbones: Sequence[tuple[str, str]],
              costs: dict[tuple[str, str], MethodCost] | None = None) -> list[CompareRow]:
    """One ``CompareRow`` per backbone x method, in the given orders (module docstring).

    ``records``: ``study.tracking.TrialRecord``s of the study; ``methods``: ``(method name, losses.method
    value)``; ``backbones``: ``(backbone name, detector name)``; ``costs``: ``(backbone, method) -> cost``.
    """
    rows = []
    for backbone, detector in backbones:
        baseline_time = math.nan
        per_seed: dict[str, dict[str, dict[int, float]]] = {}
        for method, value in methods:
            mine = [r for r in records if r.params.get(METHOD_KEY) == value and r.params.get(DETECTOR_KEY) == detector]
            done = [r for r in mine if r.status == "completed"]
            row = CompareRow(backbone, detector, method, runs=len(done), failed=len(mine) - len(done),
                             metrics={k: mean_std(r.metrics.get(k, math.nan) for r in done) for k, _ in METRICS},
                             step_time_s=mean_std(r.metrics.get(STEP_TIME_KEY, math.nan) for r in done),
                             cost=(costs or {}).get((backbone, method), MethodCost()))
            if method == BASELINE:
                baseline_time = row.step_time_s[0]
            per_seed[method] = {k: seed_values(done, k) for k, _ in METRICS}
            rows.append(row)
        for row in rows[-len(methods):]:
            if baseline_time > 0:  # False for NaN
                row.step_time_ratio = row.step_time_s[0] / baseline_time
            base = per_seed.get(BASELINE)
            row.deltas = {k: NO_PAIRS if base is None or row.method == BASELINE
                          else delta_summary(per_seed[row.method][k], base[k]) for k, _ in METRICS}
    return rows


def _num(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _delta(row: CompareRow, rows: list[CompareRow], digits: int) -> str:
    if row.method == BASELINE:
        return "baseline"
    if not any(r.backbone == row.backbone and r.method == BASELINE for r in rows):
        return "n/a (no baseline)"
    return format_delta_cell(row.deltas.get("map", NO_PAIRS), digits)


def format_markdown(rows: list[CompareRow], context: Sequence[str] = ()) -> str:
    shown = METRICS[:2]
    # One number format for the whole table: 2 decimals, 4 when every value is under 0.1 % (CPU budgets).
    digits = table_digits([100 * r.metrics[k][0] for r in rows for k, _ in shown]
                          + [100 * r.deltas[k].mean for r in rows for k, _ in shown if k in r.deltas and r.deltas[k].n])
    header = ["backbone", "student", "method", "teacher", "runs", *(f"{t} (%)" for _, t in shown),
              "ΔmAP vs baseline [95 % CI]", "extra params (M)", "extra GFLOPs", "step time (× baseline)"]
    lines = [*context, *([""] if context else []), "| " + " | ".join(header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    for r in rows:
        teacher = r.cost.teacher or "N/A"
        gflops = _num(r.extra_gflops, 4) + (f" (teacher {r.cost.teacher_gflops:.4f})" if r.cost.teacher else "")
        cells = [r.backbone, r.detector, r.method, teacher, f"{r.runs}" + (f" (+{r.failed} failed)" if r.failed else ""),
                 *(format_mean_sd(100 * r.metrics[k][0], 100 * r.metrics[k][1], r.runs, digits) for k, _ in shown),
                 _delta(r, rows, digits), f"{r.cost.training_params / 1e6:.3f}", gflops, _num(r.step_time_ratio, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "mAP, AP50: mean ± sample std over the completed seeds, in % (one seed: n = 1, no spread). Δ: the "
              "method minus the same backbone's baseline, seed by seed (the runs differ only in the method), in "
              "points: mean [95 % confidence interval, paired t]. Extra params: the training-only modules the "
              "method trains beside the student (adapters, projectors, label encoder; never exported). Extra "
              "GFLOPs: those modules plus the frozen teacher's forward, per image at the input size. Step time: "
              "the mean seconds of the last epoch's training steps over the baseline's of the same backbone (runs "
              "that shared the machine concurrently are noisy; compare with --max-concurrent 1).", DELTA_LEGEND]
    deltas = delta_rows([((r.backbone, r.method), title, r.deltas.get(k, NO_PAIRS)) for r in rows
                         if r.method != BASELINE for k, title in shown], ["backbone", "method"], digits)
    if deltas:
        lines += ["", "Paired deltas against the baseline (points; every metric in compare.csv):", "", *deltas]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[CompareRow], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["backbone", "detector", "method", "runs", "failed",
                         *(f"{k}_{stat}" for k, _ in METRICS for stat in ("mean", "std")),
                         "training_params", "training_gflops", "teacher", "teacher_params", "teacher_gflops",
                         "step_time_s_mean", "step_time_s_std", "step_time_ratio",
                         *(f"{k}_{f}" for k, _ in METRICS for f in DELTA_CSV_FIELDS)])
        for r in rows:
            c = r.cost
            writer.writerow([r.backbone, r.detector, r.method, r.runs, r.failed,
                             *(f"{v:.6f}" for k, _ in METRICS for v in r.metrics[k]),
                             c.training_params, f"{c.training_gflops:.6f}", c.teacher or "", c.teacher_params,
                             f"{c.teacher_gflops:.6f}", *(f"{v:.6f}" for v in r.step_time_s),
                             f"{r.step_time_ratio:.6f}",
                             *(v for k, _ in METRICS for v in delta_csv(r.deltas.get(k, NO_PAIRS)))])


def plot_comparison(rows: list[CompareRow], path: Path, title: str = "") -> Plot:
    """Per method, one bar per backbone: mAP (mean ± std), its paired delta to the baseline (95 % CI),
    and the step-time ratio; one legend below the panels, where it hides no bar."""
    plt = _pyplot()
    backbones = list(dict.fromkeys(r.backbone for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    others = [m for m in methods if m != BASELINE]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 4.4), layout="constrained",
                                              gridspec_kw={"width_ratios": [3, 3, 2]})
    plot = Plot(path, title or "mAP and step time per method", figure=fig)
    width = 0.8 / max(len(backbones), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, backbone in enumerate(backbones):
        mine = {r.method: r for r in rows if r.backbone == backbone}
        offset = (i - (len(backbones) - 1) / 2) * width
        xs = [j + offset for j in range(len(methods))]
        means = [100 * mine[m].metrics["map"][0] for m in methods]
        stds = [100 * mine[m].metrics["map"][1] for m in methods]
        color = colors[i % len(colors)]
        left.bar(xs, [0 if math.isnan(v) else v for v in means], width, color=color,
                 yerr=[0 if math.isnan(v) else v for v in stds], capsize=3, label=backbone)
        draw_deltas(middle, [j + offset for j in range(len(others))],
                    [mine[m].deltas.get("map", NO_PAIRS) for m in others], width, 100.0, label=None, color=color)
        ratios = [mine[m].step_time_ratio for m in methods]
        right.bar(xs, [0 if math.isnan(v) else v for v in ratios], width, color=color)
        plot.series[backbone] = sum(1 for v in means if not math.isnan(v))
    for ax, names in ((left, methods), (middle, others), (right, methods)):
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    note_all_zero(left, [r.metrics["map"][0] for r in rows], "mAP")
    note_all_zero(middle, [r.deltas["map"].mean for r in rows if r.deltas.get("map", NO_PAIRS).n], "ΔmAP")
    right.axhline(1.0, color="black", linewidth=0.6)
    left.set_ylim(bottom=0)  # APs are >= 0; an all-zero table (a CPU budget) would centre the axis on 0
    left.set_ylabel("mAP (%), mean ± std over seeds")
    middle.set_ylabel("ΔmAP vs baseline (points), 95 % CI")
    right.set_ylabel("step time / baseline's")
    fig.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncols=max(len(backbones), 1),
               fontsize=8, title="backbone", title_fontsize=8)
    fit_title(fig, plot.title)
    plot.axes = {"x": methods, "delta": others}
    save_figure(fig, path)
    return plot


def write_outputs(rows: list[CompareRow], folder: Path, context: Sequence[str] = (), title: str = "") -> list[Path]:
    """``compare.md``, ``compare.csv`` and ``compare.png`` in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    md, csv_path, png = (folder / f"compare.{ext}" for ext in ("md", "csv", "png"))
    write_text_atomic(md, format_markdown(rows, context))
    write_csv(rows, csv_path)
    plot_comparison(rows, png, title)
    return [md, csv_path, png]
