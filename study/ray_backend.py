"""Former home of the Ray Tune sweep, now the ``study.tune`` package: kept only so that callers not yet
moved (``study/demo.py``, ``benchmarks/bench_demo.py``) keep importing; new code imports ``study.tune``.
Delete once those import ``study.tune``."""

from study.tune import StudyOptions, StudySummary, run_study, start_local_ray, stop_ray

__all__ = ["StudyOptions", "StudySummary", "run_study", "start_local_ray", "stop_ray"]
