"""What searches: Tune domains for a search space, and Optuna (TPE) told the truth about each trial.

Sampled spaces use ``StudyOptunaSearch`` (TPE, multivariate, seeded; study kept in
``<study>/optuna.db``); grid spaces use ``tune.grid_search`` (every point, ``--samples`` times).

What Optuna is told: every evaluated epoch is an intermediate value at ``step = epoch``; a trial that
trained all its epochs is ``COMPLETE`` with its last value; a trial that ASHA stopped early is
``PRUNED`` (not ``COMPLETE`` with an early, low value, which TPE would compare with full-budget
results): TPE ranks pruned trials below every complete one, the ones that got further first, so it
learns "bad region" without mistaking a 1-epoch mAP for a final one. Non-finite and crashed trials
are ``FAIL`` and ignored by TPE.

For ``optuna-dashboard`` (the ``dashboard`` extra): the objective is named after the study metric, and
each Optuna trial carries ``ray_trial_id`` and ``mlflow_run_id`` as user attributes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.search.optuna import OptunaSearch

from study.errors import StudyError
from study.search_space import POINT_KEY, SearchSpace


def build_param_space(space: SearchSpace) -> dict[str, Any]:
    if space.design == "one_at_a_time":  # one grid key whose values are the design's points
        return {POINT_KEY: tune.grid_search(space.design_points())}
    out: dict[str, Any] = {}
    for p in space.params:
        if p.distribution == "grid":
            out[p.key] = tune.grid_search(list(p.values))
        elif p.distribution == "choice":
            out[p.key] = tune.choice(list(p.values))
        elif p.distribution == "uniform":
            out[p.key] = tune.uniform(p.low, p.high)
        elif p.distribution == "loguniform":
            out[p.key] = tune.loguniform(p.low, p.high)
        else:  # int, both bounds included (tune.randint excludes the upper one)
            out[p.key] = tune.randint(int(p.low), int(p.high) + 1)
    return out


class StudyOptunaSearch(OptunaSearch):
    """OptunaSearch that tells TPE the truth about early-stopped and failed trials (module docstring).

    Ray keeps its Tune-trial -> Optuna-trial map in ``_ot_trials`` and the study in ``_ot_study``
    (no public accessor; read in ``_optuna_trial`` only); everything done with them is Optuna's public API.
    """

    tracker_key: str | None = None  # the study's key in mlflow_callback.TRACKERS (links trials to MLflow runs)

    def _optuna_trial(self, trial_id: str) -> Any:
        return self._ot_trials.get(trial_id)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        import warnings

        ok = super().set_search_properties(metric, mode, config, **spec)
        if ok and self.metric:
            with warnings.catch_warnings():  # set_metric_names is marked experimental in Optuna
                warnings.simplefilter("ignore")
                self._ot_study.set_metric_names([self.metric])  # optuna-dashboard names the objective
        return ok

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        ot_trial = self._optuna_trial(trial_id)
        if ot_trial is not None:
            ot_trial.set_user_attr("ray_trial_id", trial_id)
        return params

    def _link_mlflow_run(self, trial_id: str, ot_trial: Any) -> None:
        """Record the trial's MLflow run id on the Optuna trial once the run exists (optuna-dashboard shows it)."""
        linked = self.__dict__.setdefault("_mssd_linked", set())
        if trial_id in linked or not self.tracker_key:
            return
        from study.tune.mlflow_callback import TRACKERS

        tracker = TRACKERS.get(self.tracker_key)
        run_id = tracker.run_id(trial_id) if tracker is not None else None
        if run_id:
            ot_trial.set_user_attr("mlflow_run_id", run_id)
            linked.add(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get("nonfinite") or result.get("failed") or not result.get("evaluated", 1.0):
            return
        ot_trial = self._optuna_trial(trial_id)
        if ot_trial is not None and self.metric in result and trial_id not in self._completed_trials:
            self._report(trial_id, ot_trial, float(result[self.metric]), int(result.get("epoch", 0)))

    def _report(self, trial_id: str, ot_trial: Any, value: float, epoch: int) -> None:
        reported = self.__dict__.setdefault("_mssd_reported", {}).setdefault(trial_id, set())
        if not math.isfinite(value) or epoch in reported or self._finished_in_storage(ot_trial):
            return
        self._link_mlflow_run(trial_id, ot_trial)
        ot_trial.report(value, epoch)
        reported.add(epoch)

    def _finished_in_storage(self, ot_trial: Any) -> bool:
        # After a driver restart the searcher's snapshot may predate a tell that reached optuna.db
        # (the trial is then resumed by Tune from its last checkpoint): never report or tell twice.
        for frozen in self._ot_study.get_trials(deepcopy=False):
            if frozen.number == ot_trial.number:
                return frozen.state.is_finished()
        return False

    def restore(self, checkpoint_path: str) -> None:
        """After a driver restart: Optuna trials still RUNNING in optuna.db that the restored searcher does
        not track were lost with the old driver; fail them so TPE does not count them as pending."""
        from optuna.trial import TrialState

        super().restore(checkpoint_path)
        tracked = {t.number for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number not in tracked:
                self._ot_study.tell(frozen.number, state=TrialState.FAIL)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        ot_trial = self._optuna_trial(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return
        if self._finished_in_storage(ot_trial):
            self._completed_trials.add(trial_id)
            return
        self._link_mlflow_run(trial_id, ot_trial)  # before the tell: a finished trial takes no attributes
        value = None if result is None else result.get(self.metric)
        if (error or result is None or result.get("nonfinite") or result.get("failed") or value is None
                or not math.isfinite(value)):
            self._ot_study.tell(ot_trial, None, state=TrialState.FAIL)
        else:
            # The last result reaches searchers only here when the scheduler stopped the trial on it.
            if result.get("evaluated", 1.0):
                self._report(trial_id, ot_trial, float(value), int(result.get("epoch", 0)))
            if result.get("final"):
                self._ot_study.tell(ot_trial, float(value), state=TrialState.COMPLETE)
            else:  # stopped by ASHA: its last value is an intermediate one, not a result
                self._ot_study.tell(ot_trial, None, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def optuna_storage(name: str, folder: Path, storage: str, client_mode: bool) -> Any:
    """``<study>/optuna.db``; with Ray Client the searcher runs on the head: beside the trials on a
    ``file://`` mount, else in memory there (Tune checkpoints the searcher for --resume)."""
    import optuna

    if not client_mode:
        return optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}")
    if storage.startswith("file://"):
        import pyarrow.fs as pafs

        _, path = pafs.FileSystem.from_uri(storage)
        shared = Path(path) / name
        try:
            shared.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(f"--storage {storage}: cannot create {shared} on this machine ({exc.strerror})") from None
        return optuna.storages.RDBStorage(f"sqlite:///{shared / 'optuna.db'}")
    print(f"mssd: the Optuna study is kept in memory on the Ray head ({storage} cannot hold a SQLite file)",
          flush=True)
    return None


def build_searcher(name: str, seed: int, folder: Path, storage: str, client_mode: bool) -> StudyOptunaSearch:
    import optuna

    sampler = optuna.samplers.TPESampler(multivariate=True, seed=seed)
    searcher = StudyOptunaSearch(sampler=sampler, study_name=name,
                                 storage=optuna_storage(name, folder, storage, client_mode))
    searcher.tracker_key = name
    return searcher
