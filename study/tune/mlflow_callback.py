"""The driver-side Tune callback that feeds the study's ``StudyTracker`` (the single MLflow writer).

In the driver process it uses the tracker ``run_study`` registered; with Ray Client, Tune's driver is
an actor on the head, and the callback builds its own tracker there from picklable settings (tracking
URI, study name, parent run id; no secrets), which finds the parent run this process created (through
the head's own ``MLFLOW_TRACKING_URI`` when that names the same server). Tracking never fails a trial:
an exception in a callback becomes one warning line.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from detectors.config import RunConfig, flatten_config
from study import mlflow_view, tracking
from study.tune.results import epoch_metrics, is_terminal_failure, trial_status
from study.tune.trainable import trial_config

# Trackers live in the driver process; the (pickled, restorable) callback finds its own by key.
TRACKERS: dict[str, tracking.StudyTracker] = {}


class _TrackerUnavailable(Exception):
    """The head-side tracker (Ray Client) could not start; trials go on, ``--resume`` back-fills MLflow."""


def _guarded(method: Any) -> Any:
    """Tracking must never fail a trial: an exception in a callback becomes one warning line."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except _TrackerUnavailable:
            pass  # said once, when it failed to start
        except Exception as exc:
            print(f"mssd: MLflow callback {method.__name__} failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    return wrapper


class MLflowCallback(tune.Callback):
    """Feeds the study's ``StudyTracker``; ``settings`` (``uri``, ``study``, ``parent_run_id``,
    ``flush_timeout``) only with Ray Client, where the callback runs on the head (module docstring)."""

    def __init__(self, key: str, base: RunConfig, searched: list[str], metric: str,
                 settings: dict[str, Any] | None = None) -> None:
        self.key, self.base, self.searched, self.metric = key, base, searched, metric
        self.settings = settings
        self._owned: str | None = None  # staging folder of a tracker this callback built
        self._broken = False

    def __getstate__(self) -> dict:
        return {"key": self.key, "base": self.base, "searched": self.searched, "metric": self.metric,
                "settings": self.settings}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"settings": None, **state, "_owned": None, "_broken": False})

    @property
    def tracker(self) -> tracking.StudyTracker:
        tracker = TRACKERS.get(self.key)
        if tracker is None:
            if not self.settings:
                raise KeyError(f"no MLflow tracker for study {self.key!r} in this process")
            if self._broken:
                raise _TrackerUnavailable
            staging = tempfile.mkdtemp(prefix="mssd-staging-")
            try:
                uri = self._head_uri()
                tracker = tracking.StudyTracker(uri, self.settings["study"], staging_dir=staging)
                tracker.start()
            except Exception as exc:
                self._broken = True
                shutil.rmtree(staging, ignore_errors=True)
                print(f"mssd: the Ray head cannot log to MLflow: {exc}; the trials go on and `mssd tune --resume "
                      f"--name {self.settings['study']}` back-fills MLflow from a machine that reaches it",
                      file=sys.stderr)
                raise _TrackerUnavailable from None
            TRACKERS[self.key] = tracker
            self._owned = staging
        return tracker

    def _head_uri(self) -> str:
        """The head's own ``MLFLOW_TRACKING_URI`` (how it reaches the server, e.g. http://mlflow:5000 in
        docker-compose.yml) when it holds this study's parent run, else the URI the user gave."""
        own = os.environ.get("MLFLOW_TRACKING_URI")
        candidates = [u for u in dict.fromkeys((own, self.settings["uri"])) if u and tracking.is_http_uri(u)]
        for uri in candidates:
            if tracking.store_has_run(uri, self.settings["parent_run_id"]):
                return uri
        names = " or ".join(tracking.redact_uri(u) for u in candidates)
        raise RuntimeError(f"{names} does not reach the study's parent run {self.settings['parent_run_id']} "
                           "from there")

    def _started(self, trial: Any) -> None:
        cpus = trial.placement_group_factory.required_resources.get("CPU", 1)
        cfg = trial_config(self.base, trial.config, cpus)  # as the trial runs it (its threads, its workers)
        position = len(self.tracker.known_trials - {trial.trial_id})  # trials started before this one
        name = mlflow_view.trial_run_name(trial.trial_id, position, trial.config, self.searched)  # t07 gamma=...
        self.tracker.trial_started(trial.trial_id, name, flatten_config(cfg), self.searched)

    @_guarded
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started(trial)

    @_guarded
    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started(trial)

    @_guarded
    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if is_terminal_failure(result) or "epoch" not in result:
            return
        self.tracker.trial_epoch(trial.trial_id, int(result["epoch"]), epoch_metrics(result),
                                 result.get("timestamp"))

    @_guarded
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        status = trial_status(last)
        error = str(last.get("error", "non-finite loss")) if status in ("nonfinite", "error") else None
        self._finish(trial, status, error)

    @_guarded
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = None
        try:
            error = Path(trial.error_file).read_text().strip().splitlines()[-1]
        except (OSError, TypeError, IndexError, AttributeError):
            error = "trial failed"
        self._finish(trial, "error", error)

    @_guarded
    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # A trial that ended while an earlier driver ran, but whose end that driver never wrote (killed in
        # between): the restored sweep calls no on_trial_complete for it, so its end is written here.
        for trial in trials:
            if trial.status in ("TERMINATED", "ERROR") and self.tracker.is_unfinished(trial.trial_id):
                ended = self.on_trial_error if trial.status == "ERROR" else self.on_trial_complete
                ended(0, trials, trial)
        orphans = self.tracker.initial_trials - {t.trial_id for t in trials}
        if orphans:
            print(f"mssd: {len(orphans)} MLflow trial run(s) belong to trials the restored sweep does not have "
                  "(started just before the driver died); marked lost and deleted", file=sys.stderr)
            self.tracker.retire_trials(orphans, "started by an earlier driver, lost from the Tune experiment state")
        if self._owned:  # built here (head node): its writes must land before the remote fit returns
            left = self.tracker.flush((self.settings or {}).get("flush_timeout", 300.0))
            if left:
                print(f"mssd: {left} MLflow writes could not be made from the head node; "
                      "`mssd tune --resume --name NAME` back-fills them", file=sys.stderr)
            TRACKERS.pop(self.key, None)
            shutil.rmtree(self._owned, ignore_errors=True)
            self._owned = None

    def _finish(self, trial: Any, status: str, error: str | None) -> None:
        best = None
        checkpoint = trial.checkpoint
        if checkpoint is not None and status != "nonfinite":
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    with checkpoint.as_directory() as folder:
                        if (Path(folder) / "best.pt").is_file():
                            best = Path(tmp) / "best.pt"
                            shutil.copyfile(Path(folder) / "best.pt", best)
                except Exception as exc:  # storage hiccup: the trial status still matters more
                    print(f"mssd: cannot read the best checkpoint of {trial}: {exc}", file=sys.stderr)
                self.tracker.trial_finished(trial.trial_id, status, error=error, best_checkpoint=best)
            return
        self.tracker.trial_finished(trial.trial_id, status, error=error)
