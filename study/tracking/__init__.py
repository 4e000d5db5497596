"""MLflow, the system of record: the only package that imports ``mlflow``.

- ``store``: which store (``resolve_tracking_uri``, one rule for every command), ``check_tracking``
  (one-line ``TrackingError`` when unreachable or refusing us), ``redact_uri``, the client;
- ``writer``: the single background writer every write goes through (retried in order);
- ``study_tracker``: ``StudyTracker``, a study's parent run and one child run per trial (fed by the
  Tune callback in ``study.tune.mlflow_callback``);
- ``run_logger``: ``RunLogger``, a ``fit`` callback for single runs (``mssd train``);
- ``queries``: ``study_trials``, ``metric_history``, ``log_parent_artifacts`` (export, report, ablation);
- ``provenance``: package versions and git commit tags.
"""

from study.tracking.location import local_artifact_root
from study.tracking.provenance import git_commit, package_versions
from study.tracking.queries import (
    TrialRecord,
    download_artifact,
    experiment_id,
    is_finite_number,
    log_parent_artifacts,
    metric_history,
    model_training_experiments,
    parent_run_id,
    study_trials,
)
from study.tracking.run_logger import RunLogger
from study.tracking.store import (
    TrackingError,
    check_tracking,
    default_tracking_uri,
    is_http_uri,
    redact_uri,
    resolve_tracking_uri,
    store_has_run,
    ui_command,
)
from study.tracking.study_tracker import TRIAL_STATUSES, StudyTracker

__all__ = [
    "TRIAL_STATUSES", "RunLogger", "StudyTracker", "TrackingError", "TrialRecord", "check_tracking",
    "default_tracking_uri", "download_artifact", "experiment_id", "git_commit", "is_finite_number", "is_http_uri",
    "local_artifact_root",
    "log_parent_artifacts", "metric_history", "model_training_experiments", "package_versions", "parent_run_id", "redact_uri",
    "resolve_tracking_uri", "store_has_run", "study_trials", "ui_command",
]
