"""A study in MLflow: one experiment named after the study, a parent run, one child run per trial.

Parent run: tags ``mssd.study``, ``mssd.role=parent``, package versions, git commit; artifacts
``study/base-config.yaml`` and ``study/search-space.yaml``. Child runs: tags ``mlflow.parentRunId``,
``mssd.trial_id``, ``mssd.status`` in running|completed|early_stopped|nonfinite|error (and ``lost`` for
a soft-deleted run of a trial a killed driver started but Tune never recorded); params = the trial's
flattened config; metrics at ``step = epoch``, each epoch exactly once; artifact ``checkpoints/best.pt``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.mlflow_view import training_experiment_tags
from study.tracking.store import check_tracking, client, ensure_experiment, first_line, search_all
from study.tracking.study_summary import write_parent_summary
from study.tracking.writer import Writer, log_epoch, log_params, logged_epochs, numeric_metrics

TRIAL_STATUSES = ("running", "completed", "early_stopped", "nonfinite", "error", "interrupted")
# ASHA-stopped trials end KILLED (MLflow's "stopped before completion"), so the UI's status icon tells them
# from completed ones; the ``mssd.status`` tag (a column of the study's view) says which.
_RUN_STATUS = {"running": "RUNNING", "completed": "FINISHED", "early_stopped": "KILLED",
               "nonfinite": "FAILED", "error": "FAILED", "interrupted": "KILLED"}


@dataclass
class _TrialState:
    run_id: str | None = None
    epochs: set[int] = field(default_factory=set)
    active: bool = False  # started by this driver and not finished since
    status: str | None = None  # its mssd.status as this tracker last wrote or read it


class StudyTracker:
    """A study's parent run and one child run per trial; all writes on one background thread.

    ``start()`` runs synchronously (before any trial) and fails with one line when the store cannot be
    used. The other methods only enqueue, so a slow or absent server never stalls the sweep.
    """

    def __init__(self, uri: str, study: str, *, staging_dir: str | Path, artifact_root: str | Path | None = None,
                 tags: dict[str, str] | None = None, artifacts: dict[str, str] | None = None,
                 experiment_tags: dict[str, str] | None = None) -> None:
        self.uri = uri
        self.study = study
        self.staging_dir = Path(staging_dir)
        self.artifact_root = Path(artifact_root) if artifact_root else None
        self.tags = dict(tags or {})
        self.artifacts = dict(artifacts or {})  # artifact file name -> text
        # study.mlflow_view.experiment_tags for sweeps; others (ablation, reproduce) get the model-training kind
        self.experiment_tags = dict(experiment_tags) if experiment_tags is not None else training_experiment_tags()
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.initial_trials: set[str] = set()
        self._trials: dict[str, _TrialState] = {}
        self._writer: Writer | None = None
        self._client: Any = None

    # -- synchronous set-up
    def start(self) -> None:
        check_tracking(self.uri)
        self._client = client(self.uri)
        self.experiment_id = ensure_experiment(self._client, self.uri, self.study, self.artifact_root,
                                               self.experiment_tags)
        existing = self._client.search_runs(
            [self.experiment_id], f"tags.`mssd.role` = 'parent' and tags.`mssd.study` = '{self.study}'",
            max_results=1)
        if existing:
            self.parent_run_id = existing[0].info.run_id
            self._client.update_run(self.parent_run_id, status="RUNNING")
        else:
            tags = {"mssd.study": self.study, "mssd.role": "parent", **self.tags}
            run = self._client.create_run(self.experiment_id, tags=tags, run_name=self.study)
            self.parent_run_id = run.info.run_id
            with tempfile.TemporaryDirectory() as tmp:
                for name, text in self.artifacts.items():
                    (Path(tmp) / name).write_text(text)
                    self._client.log_artifact(self.parent_run_id, str(Path(tmp) / name), "study")
        for run in self._child_runs():
            trial_id = run.data.tags.get("mssd.trial_id")
            if trial_id:
                self._trials[trial_id] = _TrialState(run.info.run_id, logged_epochs(self._client, run.info.run_id),
                                                     status=run.data.tags.get("mssd.status", "running"))
        self.initial_trials = set(self._trials)
        self._writer = Writer()

    def _child_runs(self) -> list[Any]:
        return search_all(self._client, self.experiment_id, f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'")

    @property
    def known_trials(self) -> set[str]:
        return set(self._trials)

    def is_unfinished(self, trial_id: str) -> bool:
        """Its run still says ``running``: a driver started it and no end was written (e.g. the driver was
        killed between the trial's last result and the write of its end)."""
        state = self._trials.get(trial_id)
        return state is not None and state.status == "running"

    def run_id(self, trial_id: str) -> str | None:
        """The trial's MLflow run id once the writer has created the run (None before, or if unknown)."""
        state = self._trials.get(trial_id)
        return state.run_id if state is not None else None

    # -- asynchronous writes
    def trial_started(self, trial_id: str, name: str, params: dict[str, Any], searched: Iterable[str]) -> None:
        state = self._trials.setdefault(trial_id, _TrialState())
        state.active, state.status = True, "running"
        searched = list(searched)
        start_ms = int(time.time() * 1000)

        def op() -> None:
            if state.run_id is None:
                tags = {"mlflow.parentRunId": self.parent_run_id, "mssd.study": self.study,
                        "mssd.trial_id": trial_id, "mssd.role": "trial", "mssd.status": "running",
                        "mssd.searched": ",".join(searched)}
                run = self._client.create_run(self.experiment_id, start_time=start_ms, tags=tags, run_name=name)
                state.run_id = run.info.run_id
                log_params(self._client, state.run_id, params)
            else:  # restored or retried: the run exists, its params are logged
                self._client.set_tag(state.run_id, "mssd.status", "running")
                self._client.update_run(state.run_id, status="RUNNING")

        self._writer.submit(op, f"trial {trial_id} start")

    def trial_epoch(self, trial_id: str, epoch: int, metrics: dict[str, Any], timestamp: float | None = None) -> None:
        state = self._trials.setdefault(trial_id, _TrialState())
        values = numeric_metrics(metrics)
        ts = int((timestamp or time.time()) * 1000)

        def op() -> None:
            if state.run_id is None or epoch in state.epochs:
                return
            log_epoch(self._client, state.run_id, epoch, values, ts)
            state.epochs.add(epoch)

        self._writer.submit(op, f"trial {trial_id} epoch {epoch}")

    def trial_finished(self, trial_id: str, status: str, *, error: str | None = None,
                       best_checkpoint: Path | None = None) -> None:
        if status not in TRIAL_STATUSES:
            raise ValueError(f"unknown trial status {status!r}")
        state = self._trials.setdefault(trial_id, _TrialState())
        state.active, state.status = False, status
        staged = None
        if best_checkpoint is not None and Path(best_checkpoint).is_file():
            staged = self.staging_dir / trial_id / "best.pt"
            staged.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(best_checkpoint, staged)
        end_ms = int(time.time() * 1000)

        def op() -> None:
            if state.run_id is None:
                return
            if staged is not None and staged.exists():
                self._client.log_artifact(state.run_id, str(staged), "checkpoints")
                shutil.rmtree(staged.parent, ignore_errors=True)
            self._client.set_tag(state.run_id, "mssd.status", status)
            if error:
                self._client.set_tag(state.run_id, "mssd.error", first_line(error, 500))
            self._client.set_terminated(state.run_id, status=_RUN_STATUS[status], end_time=end_ms)

        self._writer.submit(op, f"trial {trial_id} end")

    def interrupt_trials(self, reason: str) -> list[str]:
        """The driver was interrupted (Ctrl-C): every trial this driver started and that has not finished
        ends ``mssd.status=interrupted`` (run KILLED) with ``reason``; ``--resume`` runs them on. Returns
        their ids."""
        running = [t for t, state in self._trials.items() if state.active]
        for trial_id in running:
            self.trial_finished(trial_id, "interrupted", error=reason)
        return running

    def retire_trials(self, trial_ids: Iterable[str], reason: str) -> None:
        """Soft-delete the child runs of trials the sweep no longer has (e.g. started by a driver that was
        killed before Tune recorded them): tagged ``mssd.status=lost`` with the reason, then deleted, so
        the study shows each trial once; ``mlflow runs restore`` brings one back."""
        for trial_id in trial_ids:
            state = self._trials.get(trial_id)
            if state is None or state.run_id is None:
                continue

            def op(run_id: str = state.run_id) -> None:
                self._client.set_tag(run_id, "mssd.status", "lost")
                self._client.set_tag(run_id, "mssd.error", reason)
                self._client.set_terminated(run_id, status="KILLED")
                self._client.delete_run(run_id)

            self._writer.submit(op, f"trial {trial_id} retire")

    def summarize(self, metric: str, mode: str, searched: list[str], space_text: str) -> None:
        """Give the parent run the best trial's metrics and params and the study's summary (study_summary)."""
        self._writer.submit(lambda: write_parent_summary(self._client, self.experiment_id, self.parent_run_id,
                                                         self.study, metric, mode, searched, space_text),
                            "study summary")

    def study_finished(self, status: str = "FINISHED", extra_tags: dict[str, str] | None = None) -> None:
        def op() -> None:
            for key, value in (extra_tags or {}).items():
                self._client.set_tag(self.parent_run_id, key, value)
            self._client.set_terminated(self.parent_run_id, status=status)

        self._writer.submit(op, "study end")

    def flush(self, timeout: float | None = None) -> int:
        return self._writer.flush(timeout) if self._writer else 0
