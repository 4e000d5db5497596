"""Study reports: the top trials as a table and four PNG plots, from MLflow (the system of record).

``write_report(workdir, study, top=10) -> Report`` writes into ``<workdir>/<study>/report/``:

- ``metric_vs_<param>.png``: the study metric against each searched parameter (log axis for
  loguniform parameters), one point per trial, coloured by status;
- ``parallel_coordinates.png``: every finished trial as a line across the parameters (each scaled
  to [0, 1]) and the metric, coloured by the metric;
- ``learning_curves.png``: the metric per epoch of the top trials;
- ``param_importance.png``: fANOVA importance (Optuna's evaluator) of each parameter for the metric,
  computed from the finished trials; skipped, with the reason in the report, below 3 trials or one
  parameter without spread.

The files are also logged to the study's parent run under ``report/``. Plots use matplotlib's Agg
backend (no display needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from study import tracking
from study.export import rank_trials, study_meta, study_tracking_uri
from study.search_space import load_search_space


@dataclass
class Report:
    table: str
    folder: Path
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fmt_param(text: str) -> str:
    """MLflow keeps params as full-precision text; 4 significant digits read better in a table."""
    try:
        return f"{float(text):.4g}" if "." in text or "e" in text.lower() else text
    except ValueError:
        return text


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _numeric(text: str) -> float | None:
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, (int, float)) else None


def write_report(workdir: str | Path, study: str, top: int = 10) -> Report:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = study_meta(workdir, study)
    folder = Path(workdir).resolve() / study
    out = folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    uri = study_tracking_uri(workdir, meta)
    tracking.check_tracking(uri)
    metric, mode = meta["metric"], meta["mode"]
    records = tracking.study_trials(uri, study)
    space = load_search_space(folder / "search-space.yaml")
    keys = space.keys
    ranked = rank_trials(records, metric, mode)
    others = [r for r in records if r not in ranked]

    rows = []
    for i, r in enumerate(ranked[:top], start=1):
        rows.append([str(i), r.trial_id, r.status, _fmt(r.metrics.get(metric)), _fmt(r.metrics.get("epoch", "")),
                     *(_fmt_param(r.params.get(k, "")) for k in keys)])
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    table = _table(rows, ["#", "trial", "status", metric, "epochs", *keys])
    summary = f"study {study}: {len(records)} trials (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ")"
    report = Report(table=summary + "\n" + table, folder=out)

    finished = [r for r in records if tracking.is_finite_number(r.metrics.get(metric))]
    colours = {"completed": "tab:blue", "early_stopped": "tab:orange", "nonfinite": "tab:red", "error": "tab:red",
               "running": "tab:gray"}
    # metric vs each param
    for p in space.params:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for status in colours:
            pts = [(_numeric(r.params.get(p.key, "")), r.metrics[metric]) for r in finished if r.status == status]
            pts = [(x, y) for x, y in pts if x is not None]
            if pts:
                ax.scatter([x for x, _ in pts], [y for _, y in pts], label=status, color=colours[status], s=24)
        if p.distribution == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(p.key)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {p.key}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"metric_vs_{p.key.replace('.', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        report.plots.append(path)

    # parallel coordinates
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * (len(keys) + 1)), 4))
    columns = [*keys, metric]
    values = [[_numeric(r.params.get(k, "")) for k in keys] + [r.metrics[metric]] for r in finished]
    if values:
        cmap = plt.get_cmap("viridis")
        lo_hi = []
        for j, key in enumerate(columns):
            col = [v[j] for v in values if v[j] is not None]
            log = any(p.key == key and p.distribution == "loguniform" for p in space.params)
            col = [math.log10(c) if log and c > 0 else c for c in col]
            lo_hi.append((min(col, default=0.0), max(col, default=1.0), log))
        mvals = [v[-1] for v in values]
        mlo, mhi = min(mvals), max(mvals)
        for v in values:
            ys = []
            for j, x in enumerate(v):
                lo, hi, log = lo_hi[j]
                if x is None:
                    ys.append(math.nan)
                    continue
                x = math.log10(x) if log and x > 0 else x
                ys.append(0.5 if hi == lo else (x - lo) / (hi - lo))
            ax.plot(range(len(columns)), ys, color=cmap(0.5 if mhi == mlo else (v[-1] - mlo) / (mhi - mlo)), alpha=0.8)
    ax.set_xticks(range(len(columns)), columns, rotation=20, fontsize=7)
    ax.set_ylabel("scaled value")
    ax.set_title("parallel coordinates (colour: " + metric + ")")
    fig.tight_layout()
    path = out / "parallel_coordinates.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.plots.append(path)

    # learning curves of the top trials
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in ranked[:5]:
        history = tracking.metric_history(uri, r.run_id, metric)
        if history:
            ax.plot([e for e, _ in history], [v for _, v in history], marker="o", label=r.trial_id)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"learning curves, top {min(5, len(ranked))}")
    if ranked:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "learning_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.plots.append(path)

    # parameter importance
    importances, reason = _importance(space, finished, metric, mode)
    fig, ax = plt.subplots(figsize=(5, 0.5 + 0.5 * max(1, len(keys))))
    if importances:
        names = list(importances)
        ax.barh(names, [importances[n] for n in names])
        ax.set_xlabel("fANOVA importance")
    else:
        ax.text(0.5, 0.5, reason, ha="center", va="center", wrap=True, fontsize=8)
        ax.set_axis_off()
        report.notes.append(f"parameter importance skipped: {reason}")
    ax.set_title(f"parameter importance for {metric}")
    fig.tight_layout()
    path = out / "param_importance.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.plots.append(path)

    (out / "top_trials.txt").write_text(report.table + "\n")
    tracking.log_parent_artifacts(uri, study, [*report.plots, out / "top_trials.txt"], "report")
    del others
    return report


def _importance(space, finished, metric: str, mode: str) -> tuple[dict[str, float], str]:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if len(finished) < 3:
        return {}, f"needs at least 3 finished trials, got {len(finished)}"
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
    import yaml

    for r in finished:
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
    if len(study.trials) < 3:
        return {}, "fewer than 3 trials with every parameter recorded"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return optuna.importance.get_param_importances(study, evaluator=evaluator), ""
    except (RuntimeError, ValueError) as exc:
        return {}, str(exc).splitlines()[0]
