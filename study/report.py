"""Study reports: every trial in a table and the plots, from MLflow (the system of record).

``write_report(workdir, study, top=None) -> Report`` writes into ``<workdir>/<study>/report/``:

- ``top_trials.txt``: every trial (or the first ``top``), ranked ones first, with its status
  (completed, early_stopped, nonfinite, error, running), the metric, epochs run and the searched values,
  then each failed or non-finite trial's error line;
- ``metric_vs_<param>.png``: the study metric against each searched parameter, completed and
  early-stopped trials apart (an early-stopped trial's metric is from fewer epochs);
- ``parallel_coordinates.png``: every trial as a line across the parameters and the metric, each
  axis labelled with its real values, completed trials coloured by the metric (colour bar);
- ``learning_curves.png``: the metric per epoch of the top 5 trials;
- ``param_importance.png``: fANOVA importance (Optuna's evaluator) of each parameter, only when
  enough trials completed (``importance_minimum``); otherwise the report says why, and no plot.

A study where no trial completed draws no plot and says so. The files are also logged to the
study's parent run under ``report/``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from study import tracking
from study.errors import StudyError
from study.export import rank_trials, study_tracking_uri
from study.report_evidence import write_evidence
from study.report_plots import (
    Axis,
    Plot,
    TrialPoint,
    format_value,
    importance_bars,
    learning_curves,
    metric_vs_param,
    parallel_coordinates,
)
from study.search_space import SearchSpace, load_search_space
from study.study_files import SEARCH_SPACE, find_study_meta

PLOT_FILES = ("parallel_coordinates.png", "learning_curves.png", "param_importance.png")
LEARNING_CURVES = 5


@dataclass
class Report:
    table: str
    folder: Path
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    described: list[Plot] = field(default_factory=list)  # what each plot shows, in words
    errors: str = ""  # errors_section: each failed trial's error line, printed under the table


def importance_minimum(space: SearchSpace) -> int:
    """Completed trials needed before fANOVA says anything: 2 per searched parameter, at least 4.

    Its random forest fitted to fewer points ranks parameters by noise; early-stopped trials do
    not count (their metric is from fewer epochs, which would be read as a parameter effect).
    """
    return max(4, 2 * len(space.params))


def _fmt_param(text: str) -> str:
    """MLflow keeps params as full-precision text; 4 significant digits read better in a table."""
    try:
        return format_value(float(text)) if "." in text or "e" in text.lower() else text
    except ValueError:
        return text


def _fmt_metric(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def trials_table(records: list[tracking.TrialRecord], metric: str, mode: str, keys: list[str],
                 top: int | None = None) -> str:
    """Every trial: the ranked ones first (best first, numbered), then the others by status."""
    ranked = rank_trials(records, metric, mode)
    rest = sorted((r for r in records if r not in ranked), key=lambda r: (r.status, r.trial_id))
    rows = []
    for i, r in enumerate([*ranked, *rest], start=1):
        rank = str(i) if i <= len(ranked) else "-"
        epochs = r.metrics.get("epoch")
        label = _trial_label(r)
        rows.append([rank, label, r.status, _fmt_metric(r.metrics.get(metric)),
                     "-" if epochs is None else str(int(epochs)), *(_fmt_param(r.params.get(k, "")) for k in keys)])
    shown = rows if top is None else rows[:top]
    table = _table(shown, ["#", "trial", "status", metric, "epochs", *keys])
    if len(shown) < len(rows):
        table += f"\n({len(rows) - len(shown)} more trials: --top {len(rows)} lists them all)"
    return table


def errors_section(records: list[tracking.TrialRecord]) -> str:
    """Each failed or non-finite trial's error line (its ``mssd.error`` tag), under the table: the table's
    row only says ``error``; this is what a user acts on."""
    failed = [r for r in records if r.status in ("error", "nonfinite")]
    if not failed:
        return ""
    lines = ["errors:"]
    for r in sorted(failed, key=lambda r: _trial_label(r)):
        lines.append(f"  {_trial_label(r)}  {r.error or '(no error recorded)'}")
    return "\n".join(lines)


def _trial_label(r: tracking.TrialRecord) -> str:
    return r.name.split(" ", 1)[0] if r.name else r.trial_id  # "t03": the values are the table's next columns


def _axis(param) -> Axis:
    if param.distribution in ("choice", "grid"):
        return Axis(param.key, "categorical", tuple(str(v) for v in param.values))
    return Axis(param.key, "log" if param.distribution == "loguniform" else "linear")


def _value(text: str | None, axis: Axis):
    if text is None:
        return None
    if axis.kind == "categorical":
        import yaml

        return str(yaml.safe_load(text))
    try:
        return float(text)
    except ValueError:
        return None


def trial_points(records: list[tracking.TrialRecord], space: SearchSpace, metric: str) -> list[TrialPoint]:
    """Completed and early-stopped trials with a finite metric, as the plots need them."""
    axes = {p.key: _axis(p) for p in space.params}
    points = []
    for r in records:
        value = r.metrics.get(metric)
        if r.status not in ("completed", "early_stopped") or not tracking.is_finite_number(value):
            continue
        points.append(TrialPoint(label=r.name or r.trial_id, status=r.status, epochs=int(r.metrics.get("epoch", 0)),
                                 values={k: _value(r.params.get(k), a) for k, a in axes.items()}, metric=value))
    return points


def write_report(workdir: str | Path, study: str, top: int | None = None) -> Report:
    meta = find_study_meta(workdir, study)  # a tune study, or an ablate / compare folder trained in-process
    folder = Path(workdir).resolve() / study
    if not (folder / SEARCH_SPACE).is_file():  # mssd reproduce: a paper table, not a search
        raise StudyError(f"{study}: written by {meta.get('written_by', 'another command')}, which has no search space "
                         f"to report on; its tables and plots are under {folder}, its runs in `mssd ui {study}`")
    out = folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    uri = study_tracking_uri(workdir, meta)
    tracking.check_tracking(uri)
    metric, mode = meta["metric"], meta["mode"]
    records = tracking.study_trials(uri, study)
    space = load_search_space(folder / "search-space.yaml")

    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = f"study {study}: {len(records)} trials (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ")"
    report = Report(table=summary + "\n" + trials_table(records, metric, mode, space.keys, top), folder=out,
                    errors=errors_section(records))
    # One MLflow read per trial: the learning curves and the early-ranking check share the top trials' histories.
    history = functools.cache(lambda run_id: tracking.metric_history(uri, run_id, metric))
    report.described, report.notes = write_plots(
        out, records, space, metric, mode, history)
    report.plots = [p.path for p in report.described]
    evidence = write_evidence(out, records, space, metric, mode, meta.get("options", {}),
                              _study_epochs(folder), history)

    text = report.table + (f"\n{report.errors}" if report.errors else "") + "".join(f"\nnote: {n}" for n in report.notes) + "\n"
    (out / "top_trials.txt").write_text(text)
    tracking.log_parent_artifacts(uri, study, [*report.plots, *evidence, out / "top_trials.txt"], "report")
    return report


def _study_epochs(folder: Path) -> int:
    """The epochs every trial of the study was to run (its base config's ``train.epochs``)."""
    import yaml

    base = yaml.safe_load((folder / "base-config.yaml").read_text()) or {}
    return int((base.get("train") or {}).get("epochs") or 0)


def write_plots(out: Path, records: list[tracking.TrialRecord], space: SearchSpace, metric: str, mode: str,
                history: Callable[[str], list[tuple[int, float]]]) -> tuple[list[Plot], list[str]]:
    """Draw the report's plots into ``out``; ``history(run_id)`` gives a trial's metric per epoch.

    Returns what was drawn and the notes on what was not (no completed trial: no plot at all).
    """
    for stale in [*out.glob("metric_vs_*.png"), *(out / name for name in PLOT_FILES)]:
        stale.unlink(missing_ok=True)  # a re-run must not leave plots the new report did not draw
    drawn: list[Plot] = []
    notes: list[str] = []
    points = trial_points(records, space, metric)
    completed = [p for p in points if p.status == "completed"]
    if not completed:
        counts = ", ".join(f"{sum(r.status == s for r in records)} {s}" for s in sorted({r.status for r in records}))
        return drawn, [f"no trial completed ({counts or 'no trials'}), so there is nothing to plot"]
    axes = [_axis(p) for p in space.params]
    for axis in axes:
        drawn.append(metric_vs_param(out / f"metric_vs_{axis.name.replace('.', '_')}.png", axis, points, metric))
    drawn.append(parallel_coordinates(out / "parallel_coordinates.png", axes, points, metric))
    curves = {}
    for r in rank_trials(records, metric, mode)[:LEARNING_CURVES]:
        points_per_epoch = history(r.run_id)
        if points_per_epoch:
            curves[r.name or r.trial_id] = points_per_epoch
    drawn.append(learning_curves(out / "learning_curves.png", curves, metric))
    importances, reason = _importance(space, records, metric, mode)
    if importances:
        drawn.append(importance_bars(out / "param_importance.png", importances, metric, len(completed)))
    else:
        notes.append(f"parameter importance skipped: {reason}")
    return drawn, notes

def _importance(space: SearchSpace, records: list[tracking.TrialRecord], metric: str,
                mode: str) -> tuple[dict[str, float], str]:
    import optuna
    import yaml
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    completed = [r for r in records if r.status == "completed" and tracking.is_finite_number(r.metrics.get(metric))]
    needed = importance_minimum(space)
    if len(completed) < needed:
        return {}, (f"{len(completed)} trials completed; fANOVA needs at least {needed} "
                    f"(2 per searched parameter, at least 4) to rank {len(space.params)} "
                    f"parameter{'s' if len(space.params) != 1 else ''}")
    dists = {}
    for p in space.params:
        if p.distribution in ("choice", "grid"):
            dists[p.key] = CategoricalDistribution(list(p.values))
        elif p.distribution == "int":
            dists[p.key] = IntDistribution(int(p.low), int(p.high))
        else:
            dists[p.key] = FloatDistribution(p.low, p.high, log=p.distribution == "loguniform")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for r in completed:
        params = {}
        for key, dist in dists.items():
            if key not in r.params:
                break
            value = yaml.safe_load(r.params[key])
            if isinstance(dist, CategoricalDistribution) and value not in dist.choices:
                break
            params[key] = value
        else:
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=r.metrics[metric]))
    if len(study.trials) < needed:
        return {}, f"only {len(study.trials)} completed trials have every parameter recorded; fANOVA needs {needed}"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return optuna.importance.get_param_importances(study, evaluator=evaluator), ""
    except (RuntimeError, ValueError) as exc:
        return {}, str(exc).splitlines()[0]
