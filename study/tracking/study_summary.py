"""The study's parent run as a summary: the best trial's metrics and params, trials by status, the space.

Written when a sweep ends (``StudyTracker.summarize``), from the child runs as MLflow holds them, so a
resumed study's summary covers every trial. In the MLflow UI the parent row then reads like its best
trial (same metric and parameter columns), and its description (``mlflow.note.content``, shown on
the run page) says how the study went.

MLflow params are write-once: when a resumed study's best trial changes, params the parent already
has keep their first value; the tags ``mssd.best_trial`` and ``mssd.best_params`` always name the
current best.
"""

from __future__ import annotations

import json
import time
from typing import Any

from study.tracking.queries import trial_record
from study.tracking.store import search_all
from study.tracking.writer import log_params

STATUS_ORDER = ("completed", "early_stopped", "nonfinite", "error", "interrupted", "running", "lost")


def _best(runs: list[Any], metric: str, mode: str) -> Any | None:
    """The best child run by the study's one ranking (``study.export.rank_trials``: completed trials,
    ASHA-stopped ones only when none completed, ties to the earlier trial), so this tag, ``mssd tune``'s
    summary and ``mssd export`` name the same trial."""
    from study.export import rank_trials  # study.export reads studies through this package

    ranked = rank_trials([trial_record(r) for r in sorted(runs, key=lambda r: r.info.start_time or 0)], metric, mode)
    return next(r for r in runs if r.info.run_id == ranked[0].run_id) if ranked else None


def status_counts(runs: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        status = run.data.tags.get("mssd.status", "running")
        counts[status] = counts.get(status, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: STATUS_ORDER.index(kv[0]) if kv[0] in STATUS_ORDER else 99))


def describe_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "no trials"


def _note(study: str, metric: str, mode: str, counts: dict[str, int], best: Any | None, searched: list[str],
          space_text: str) -> str:
    lines = [f"**Study {study}**: {sum(counts.values())} trials ({describe_counts(counts)}); "
             f"metric `{metric}` ({mode}).", ""]
    if best is None:
        lines.append("No trial completed with a finite metric.")
    else:
        lines.append(f"Best trial: **{best.info.run_name}** with {metric} = {best.data.metrics[metric]:.4f} "
                     f"after {int(best.data.metrics.get('epoch', 0))} epochs; this run carries its metrics "
                     "and params.")
        lines += ["", "| parameter | best value |", "| --- | --- |"]
        lines += [f"| `{k}` | {best.data.params.get(k, '')} |" for k in searched]
    lines += ["", "Search space:", "", "```yaml", space_text.strip(), "```"]
    return "\n".join(lines)


def write_parent_summary(mlflow_client: Any, experiment_id: str, parent_run_id: str, study: str, metric: str,
                         mode: str, searched: list[str], space_text: str) -> dict[str, Any]:
    """Log the summary to the parent run; returns what it logged (best run id, counts) for the caller."""
    children = search_all(mlflow_client, experiment_id, f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    children = [r for r in children if r.info.lifecycle_stage == "active"]
    counts = status_counts(children)
    best = _best(children, metric, mode)
    tags = {"mssd.trials": describe_counts(counts), "mssd.search_space": space_text.strip()[:5000],
            "mlflow.note.content": _note(study, metric, mode, counts, best, searched, space_text)}
    tags.update({f"mssd.trials.{status}": str(n) for status, n in counts.items()})
    if best is not None:
        tags.update({"mssd.best_trial": best.info.run_name or best.info.run_id, "mssd.best_run_id": best.info.run_id,
                     "mssd.best_value": repr(float(best.data.metrics[metric])),
                     "mssd.best_params": json.dumps({k: best.data.params.get(k) for k in searched})})
        from mlflow.entities import Metric

        step = int(best.data.metrics.get("epoch", 0))
        ts = int(time.time() * 1000)  # newer than any earlier summary: the UI shows the latest value
        points = [Metric(k, float(v), ts, step) for k, v in best.data.metrics.items()]
        for i in range(0, len(points), 1000):
            mlflow_client.log_batch(parent_run_id, metrics=points[i: i + 1000])
        have = mlflow_client.get_run(parent_run_id).data.params
        log_params(mlflow_client, parent_run_id, {k: v for k, v in best.data.params.items() if k not in have})
    for key, value in tags.items():
        mlflow_client.set_tag(parent_run_id, key, value)
    return {"best_run_id": best.info.run_id if best is not None else None, "counts": counts}
