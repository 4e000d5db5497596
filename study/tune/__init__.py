"""Ray Tune sweeps: the only package that imports ``ray``.

- ``driver``: ``run_study(options) -> StudySummary``, one study end to end;
- ``options``: ``StudyOptions`` (validated) and ``StudySummary``;
- ``trainable``: one trial in a Ray worker (``fit`` + a checkpoint reported per epoch);
- ``searcher``: Tune domains of a search space, and Optuna/TPE told the truth about each trial;
- ``mlflow_callback``: the driver-side callback feeding ``study.tracking.StudyTracker``;
- ``results``: Tune results as MLflow metrics and statuses, the ``--resume`` back-fill;
- ``ray_runtime``: starting or joining Ray, ``start_local_ray`` / ``stop_ray`` for tests and the demo.
"""

from study.tune.driver import run_study
from study.tune.options import StudyOptions, StudySummary
from study.tune.ray_runtime import start_local_ray, stop_ray

__all__ = ["StudyOptions", "StudySummary", "run_study", "start_local_ray", "stop_ray"]
