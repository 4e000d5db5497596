"""Runs of a study trained one after another in this process (no Ray), each an MLflow child run.

``mssd ablate --backend local`` and ``mssd reproduce`` share this loop: a row whose loss goes
non-finite is recorded as such and the others still run; the parent run is closed KILLED when the
loop is interrupted, FINISHED otherwise, and the tracker's queued writes are flushed either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.config import RunConfig, flatten_config
from detectors.errors import NonFiniteLossError


@dataclass(frozen=True)
class LocalRun:
    trial_id: str  # also the run's folder name under the study folder
    name: str  # the MLflow run name
    cfg: RunConfig
    searched: list[str]  # the flattened keys that vary across the study's runs


class _EpochLogger:
    """``fit`` callback: each epoch's metrics to the run's MLflow child run."""

    def __init__(self, tracker: Any, trial_id: str) -> None:
        self.tracker, self.trial_id = tracker, trial_id

    def after_epoch(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        self.tracker.trial_epoch(self.trial_id, epoch, metrics)


def run_in_process(tracker: Any, runs: Iterable[LocalRun], folder: Path) -> None:
    """Train ``runs`` in order under the started ``tracker`` (a ``StudyTracker``), then close the study."""
    from detectors.engine.trainer import fit

    status = "FINISHED"
    try:
        for run in runs:
            tracker.trial_started(run.trial_id, run.name, flatten_config(run.cfg), run.searched)
            run_dir = folder / run.trial_id
            try:
                fit(run.cfg, run_dir, callbacks=[_EpochLogger(tracker, run.trial_id)])
            except NonFiniteLossError as exc:  # the other runs still tell us something
                print(f"mssd: {run.trial_id}: {exc}", flush=True)
                tracker.trial_finished(run.trial_id, "nonfinite", error=str(exc))
                continue
            tracker.trial_finished(run.trial_id, "completed", best_checkpoint=run_dir / "checkpoints" / "best.pt")
    except BaseException:
        status = "KILLED"
        raise
    finally:
        tracker.study_finished(status)
        left = tracker.flush(600)
        if left:
            print(f"mssd: {left} MLflow writes could not be made (tracking store unreachable)", flush=True)
