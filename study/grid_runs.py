"""A generated grid study (``mssd ablate``, ``mssd compare``): every point x seed trained once, on Ray or
in this process, one MLflow parent run with a child run per training; then tabulated from MLflow.

- ``GridOptions``: how the runs are executed (backend, Ray resources and address, console output);
- ``resolve_backend``: ``auto`` is ``ray`` when Ray imports, else ``local``;
- ``study_tracker``: the study's MLflow parent run with its base config and grid as artifacts (started
  by the caller, e.g. before ``mssd compare`` trains its teacher under the same parent);
- ``run_grid``: backend ``ray`` runs the grid through ``study.tune.run_study`` with ASHA off (every run
  trains all its epochs; that study's tracker reuses a parent run that already exists); ``local`` runs
  the caller's ``LocalRun`` list one after another (``study.local_runs``);
- ``mean_std`` / ``format_pct``: the tables' statistics (mean +- sample std, in %).
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from detectors.config import RunConfig
from detectors.errors import ConfigError
from study import mlflow_view, tracking
from study.config import config_to_yaml, write_text_atomic
from study.local_runs import LocalRun, run_in_process

BACKENDS = ("auto", "ray", "local")
METRIC, MODE = "map", "max"


@dataclass
class GridOptions:
    backend: str = "auto"  # auto: ray when it imports, else local
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    address: str | None = None
    verbose: int | None = None


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    try:
        import study.tune  # noqa: F401  (imports ray)
    except ImportError:
        return "local"
    return "ray"


def study_tracker(uri: str, name: str, folder: Path, workdir: str, base: RunConfig, space_text: str,
                  searched: list[str], tags: dict[str, str] | None = None) -> tracking.StudyTracker:
    """The study's tracker (not started): parent-run tags (versions, commit, metric), the base config and
    the grid as artifacts, the experiment's trials view over the ``searched`` keys."""
    all_tags = {f"version.{k}": v for k, v in tracking.package_versions().items()}
    commit = tracking.git_commit(Path(__file__).resolve().parent)
    if commit:
        all_tags["mlflow.source.git.commit"] = commit
    all_tags.update({"mssd.metric": METRIC, "mssd.mode": MODE, **(tags or {})})
    return tracking.StudyTracker(
        uri, name, staging_dir=folder / ".mlflow-staging", artifact_root=Path(workdir).resolve() / "mlartifacts",
        tags=all_tags, artifacts={"base-config.yaml": config_to_yaml(base), "search-space.yaml": space_text},
        experiment_tags=mlflow_view.experiment_tags(METRIC, MODE, searched))


def run_grid(options: GridOptions, backend: str, *, config: str, overrides: list[str], name: str, workdir: str,
             base: RunConfig, space_text: str, searched: list[str], local_runs: Callable[[], Iterable[LocalRun]],
             tracker: tracking.StudyTracker | None = None) -> None:
    """Train every point of the grid ``space_text`` (see the module docstring).

    ``config`` + ``overrides`` is the base config as ``run_study`` loads it (``base`` is its parsed form);
    ``tracker``: an already started ``study_tracker`` (local backend: used; ray: ``run_study``'s own tracker
    reuses its parent run). Returns when every run has ended; the results are in MLflow.
    """
    folder = Path(workdir).resolve() / name
    if backend == "ray":
        from study.tune import StudyOptions, run_study

        with tempfile.TemporaryDirectory() as tmp:
            space = Path(tmp) / f"{name}.yaml"
            space.write_text(space_text)
            run_study(StudyOptions(
                config=config, space=str(space), overrides=list(overrides), name=name, workdir=workdir, samples=1,
                max_concurrent=options.max_concurrent, cpus_per_trial=options.cpus_per_trial,
                gpus_per_trial=options.gpus_per_trial, address=options.address, asha=False, metric=METRIC,
                mode=MODE, verbose=options.verbose))
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "base-config.yaml", config_to_yaml(base))
    write_text_atomic(folder / "search-space.yaml", space_text)
    if tracker is None:
        tracker = study_tracker(tracking.resolve_tracking_uri(base.tracking.uri, workdir), name, folder, workdir,
                                base, space_text, searched, {"mssd.backend": "local"})
        tracker.start()
    run_in_process(tracker, local_runs(), folder)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample std (n - 1: the spread a new seed would show; 0 for one value) of the finite values;
    NaN, NaN when there is none."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def format_pct(value: tuple[float, float], digits: int = 2) -> str:
    """``(mean, std)`` fractions as ``"12.34 ± 0.56"`` in %; two decimals by default, since short (CPU)
    budgets give APs well under 1%, which one decimal would hide."""
    mean, std = value
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f}"
