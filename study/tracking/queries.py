"""Reading a study back from MLflow (export, report, ablation tables) and logging files to its parent run."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.tracking.store import TrackingError, client, redact_uri, search_all


@dataclass
class TrialRecord:
    run_id: str
    trial_id: str
    name: str
    status: str  # mssd.status
    params: dict[str, str]
    metrics: dict[str, float]  # latest value of each metric
    searched: list[str]
    artifact_uri: str
    error: str = ""  # mssd.error: the one line a failed or non-finite trial ended with


def _experiment_id(mlflow_client: Any, study: str) -> str:
    experiment = mlflow_client.get_experiment_by_name(study)
    if experiment is None:
        raise TrackingError(f"no study {study!r} in MLflow store {redact_uri(mlflow_client.tracking_uri)}")
    return experiment.experiment_id


def experiment_id(uri: str, study: str) -> str:
    """The id of the study's experiment (one-line ``TrackingError`` when the store has no such study)."""
    return _experiment_id(client(uri), study)


def model_training_experiments(uri: str) -> list[tuple[str, str, bool]]:
    """``(name, id, has the trials view)`` of each model-training experiment (studies and ``mssd train``)."""
    from study.mlflow_view import EXPERIMENT_KIND_TAG, MODEL_TRAINING, SHARED_VIEW_PREFIX, VIEW_KEY

    experiments = client(uri).search_experiments(filter_string=f"tags.`{EXPERIMENT_KIND_TAG}` = '{MODEL_TRAINING}'")
    return [(e.name, e.experiment_id, SHARED_VIEW_PREFIX + VIEW_KEY in e.tags) for e in experiments]


def parent_run_id(uri: str, study: str) -> str:
    mlflow_client = client(uri)
    runs = mlflow_client.search_runs([_experiment_id(mlflow_client, study)],
                                     f"tags.`mssd.role` = 'parent' and tags.`mssd.study` = '{study}'", max_results=1)
    if not runs:
        raise TrackingError(f"study {study!r} has no parent run in {redact_uri(uri)}")
    return runs[0].info.run_id


def study_trials(uri: str, study: str) -> list[TrialRecord]:
    """Every trial of a study (one record per child run), in creation order."""
    mlflow_client = client(uri)
    runs = search_all(mlflow_client, _experiment_id(mlflow_client, study), "tags.`mssd.role` = 'trial'")
    return [trial_record(run) for run in sorted(runs, key=lambda r: r.info.start_time or 0)]


def trial_record(run: Any) -> TrialRecord:
    """One trial's MLflow run as a ``TrialRecord`` (what ``study.export.rank_trials`` ranks)."""
    tags = run.data.tags
    return TrialRecord(
        run_id=run.info.run_id, trial_id=tags.get("mssd.trial_id", ""), name=run.info.run_name or "",
        status=tags.get("mssd.status", "running"), params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        searched=[k for k in tags.get("mssd.searched", "").split(",") if k],
        artifact_uri=run.info.artifact_uri, error=tags.get("mssd.error", ""))


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """``[(epoch, value), ...]`` sorted by epoch (one point per epoch)."""
    points = {int(m.step): float(m.value) for m in client(uri).get_metric_history(run_id, key)}
    return sorted(points.items())


def download_artifact(uri: str, run_id: str, path: str, dst: str | Path) -> Path:
    return Path(client(uri).download_artifacts(run_id, path, str(dst)))


def log_parent_artifacts(uri: str, study: str, paths: Iterable[str | Path], artifact_path: str) -> None:
    mlflow_client = client(uri)
    run_id = parent_run_id(uri, study)
    for path in paths:
        mlflow_client.log_artifact(run_id, str(path), artifact_path)


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
