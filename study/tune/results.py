"""Tune's trial results as MLflow sees them: which keys are metrics, a trial's status, and the back-fill
of MLflow from Tune's ``result.json`` files on ``--resume``."""

from __future__ import annotations

import json
from typing import Any

from detectors.config import RunConfig, flatten_config
from study import mlflow_view, tracking
from study.cluster import is_storage_uri
from study.search_space import with_params

_TUNE_KEYS = {"timestamp", "training_iteration", "time_this_iter_s", "time_total_s", "pid", "hostname",
              "node_ip", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "done",
              "trial_id", "date", "config", "experiment_tag", "should_checkpoint", "final", "evaluated",
              "nonfinite", "failed", "error"}
_EVAL_METRICS = ("map", "ap50", "ap75", "aps", "apm", "apl")


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The metrics of one reported epoch; evaluation metrics only when the epoch was evaluated."""
    metrics = {k: v for k, v in result.items() if k not in _TUNE_KEYS and isinstance(v, (int, float))
               and not isinstance(v, bool)}
    if not result.get("evaluated", 1.0):
        metrics = {k: v for k, v in metrics.items() if not _is_eval_metric(k)}
    return metrics


def _is_eval_metric(key: str) -> bool:
    return key in _EVAL_METRICS or key.startswith("ap/")


def is_terminal_failure(result: dict[str, Any]) -> bool:
    """The one result a trial reports when it ends on a non-finite loss or a data/config error."""
    return bool(result.get("nonfinite") or result.get("failed"))


def trial_status(last: dict[str, Any]) -> str:
    """``nonfinite``, ``error`` (bad data or config), ``completed`` (trained every epoch) or
    ``early_stopped``, from a trial's last result."""
    if last.get("nonfinite"):
        return "nonfinite"
    if last.get("failed"):
        return "error"
    return "completed" if last.get("final") else "early_stopped"


def _trial_results(experiment_path: str) -> list[str]:
    """The text of every trial's ``result.json`` under a local path or any pyarrow URI."""
    from pathlib import Path

    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(experiment_path if is_storage_uri(experiment_path)
                                        else str(Path(experiment_path).resolve()))
    texts = []
    for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name.startswith("trial_"):
            path = f"{info.path}/result.json"
            if fs.get_file_info(path).type == pafs.FileType.File:
                with fs.open_input_stream(path) as stream:
                    texts.append(stream.read().decode())
    return texts


def backfill(experiment_path: str, tracker: tracking.StudyTracker, base: RunConfig, searched: list[str]) -> None:
    """On --resume: log to MLflow whatever the trials reported but MLflow never got (the driver died
    while the store was unreachable). Tune's ``result.json`` files are the record; epochs already in
    MLflow are skipped by the tracker."""
    for text in _trial_results(experiment_path):
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        rows = [r for r in rows if "epoch" in r and "trial_id" in r]
        if not rows:
            continue
        trial_id = rows[0]["trial_id"]
        new = trial_id not in tracker.known_trials
        if new:
            cfg = with_params(base, rows[0].get("config") or {})
            name = mlflow_view.trial_run_name(trial_id, len(tracker.known_trials), rows[0].get("config") or {},
                                              searched)
            tracker.trial_started(trial_id, name, flatten_config(cfg), searched)
        for row in rows:
            if not is_terminal_failure(row):
                tracker.trial_epoch(trial_id, int(row["epoch"]), epoch_metrics(row), row.get("timestamp"))
        if new:  # its status as far as the results tell; a trial Tune resumes updates it again
            last = rows[-1]
            tracker.trial_finished(trial_id, trial_status(last), error=last.get("error"))
