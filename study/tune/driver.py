"""``run_study(options)``: one study end to end, in the process that runs ``mssd tune``.

1. loads the base config and the search space (one-line errors), checks the cluster address, the
   MLflow store (one line when unreachable) -- all before Ray starts or any trial runs;
2. writes the study folder (``study.study_files``) and starts the study's MLflow parent run;
3. starts or joins Ray (``study.tune.ray_runtime``);
4. builds a ``Tuner`` (or ``Tuner.restore`` with ``--resume``, after back-filling MLflow from Tune's
   results) over the trainable (``study.tune.trainable``), the searcher (``study.tune.searcher``), ASHA
   on the study metric with ``time_attr="epoch"`` unless switched off, and the MLflow callback
   (``study.tune.mlflow_callback``);
5. returns a ``StudySummary`` (counts by status, best trial).

Ray Client (``--address ray://HOST:PORT``): Tune then runs ``Tuner.fit`` in an actor on the head node,
so the Tune driver -- and the MLflow callback -- live there; ``study.cluster`` lists what that needs.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from detectors.config import RunConfig, config_to_dict, flatten_config, parse_config
from study import faults, mlflow_view, tracking
from study.cluster import RayAddress
from study.config import config_to_yaml, load_config, load_saved_config
from study.errors import StudyError
from study.search_space import POINT_KEY, SearchSpace, load_search_space
from study.study_files import (
    BASE_CONFIG,
    META_FILE,
    SEARCH_SPACE,
    check_store_placement,
    default_study_name,
    load_study_meta,
    recorded_tracking_uri,
    store_record,
    study_dir,
    write_study_files,
)
from study.train_plan import check_data
from study.tune.console import ray_output, reporting
from study.tune.mlflow_callback import TRACKERS, MLflowCallback
from study.tune.options import StudyOptions, StudySummary, check_local_gpus, resolve_grace_period
from study.tune.ray_runtime import check_storage, init_ray
from study.tune.results import backfill, trial_status
from study.tune.searcher import build_param_space, build_searcher
from study.tune.trainable import build_trainable


def _absolute_paths(cfg: RunConfig) -> RunConfig:
    """Trials run in Ray's per-trial working folder: make the config's paths absolute before shipping it."""
    data = config_to_dict(cfg)
    data["data"]["root"] = str(Path(data["data"]["root"]).resolve())
    if data["detector"].get("weights"):
        data["detector"]["weights"] = str(Path(data["detector"]["weights"]).resolve())
    if data["distill"]["teacher"].get("weights"):  # the frozen teacher of kd / fgfi / defeat
        data["distill"]["teacher"]["weights"] = str(Path(data["distill"]["teacher"]["weights"]).resolve())
    return parse_config(data)


def _prepare(options: StudyOptions) -> tuple[StudyOptions, RunConfig, SearchSpace, Path, dict | None]:
    """Resolve a new or resumed study: options, base config, space, folder, its study.json (resumed)."""
    if options.resume:
        if not options.name:
            raise StudyError("--resume needs --name NAME of the study to continue")
        meta = load_study_meta(options.workdir, options.name)
        folder = study_dir(options.workdir, options.name)
        saved = StudyOptions(**{**meta["options"], "resume": True, "workdir": options.workdir,
                                "verbose": options.verbose, "address": options.address or meta["options"]["address"]})
        cfg = load_saved_config(folder / BASE_CONFIG)  # perhaps written by an older release
        space = load_search_space(folder / SEARCH_SPACE, cfg)
        check_unchanged(options, saved, cfg, space)
        return saved, _absolute_paths(cfg), space, folder, meta
    cfg = load_config(options.config, options.overrides)
    space = load_search_space(options.space, cfg)  # values checked against this config's detector
    options = replace(options, name=options.name or default_study_name(options.space))
    folder = study_dir(options.workdir, options.name)
    if (folder / META_FILE).exists():
        raise StudyError(f"study {options.name!r} already exists in {folder}; pass --resume to continue it or "
                         "another --name")
    return options, _absolute_paths(cfg), space, folder, None


# Options a resume takes from study.json; a different value on the command line is refused by its flag.
# None can be honoured: Tune restores its own scheduler, searcher, trial count and resources with the
# experiment (more --samples included: a study that should run more trials is a new study).
_RECORDED_FLAGS = {"samples": "--samples", "max_concurrent": "--max-concurrent", "cpus_per_trial": "--cpus-per-trial",
                   "gpus_per_trial": "--gpus-per-trial", "storage": "--storage", "metric": "--metric",
                   "mode": "--mode", "asha": "--no-asha", "grace_period": "--grace-period",
                   "reduction_factor": "--reduction-factor", "max_failures": "--max-failures",
                   "keep_checkpoints": "--keep-checkpoints", "seed": "--seed"}
_SHOWN_CHANGES = 8


def check_unchanged(given: StudyOptions, saved: StudyOptions, base: RunConfig, space: SearchSpace) -> None:
    """``--resume`` continues the study as it was started: a CONFIG or ``--set`` that changes its base
    config, another ``--space``, or an option given with another value than study.json's is refused in
    one line naming each change. An option left at its default is not a change (the CLI cannot tell
    it from one not given): the study's value is used; so is an empty ``config`` or ``space`` (library
    callers resuming by name)."""
    changes = []
    if given.config:
        new = flatten_config(_absolute_paths(load_config(given.config, given.overrides)))
        old = flatten_config(_absolute_paths(base))
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in keys[:_SHOWN_CHANGES])
        if keys:
            more = f" and {len(keys) - _SHOWN_CHANGES} more" if len(keys) > _SHOWN_CHANGES else ""
            changes.append(f"CONFIG/--set changes {shown}{more}")
    if given.space and load_search_space(given.space, base).params != space.params:
        changes.append(f"--space {given.space} is not the study's {SEARCH_SPACE}")
    defaults = StudyOptions(config="", space="")
    for field_name, flag in _RECORDED_FLAGS.items():
        value, recorded = getattr(given, field_name), getattr(saved, field_name)
        if value != getattr(defaults, field_name) and value != recorded:
            changes.append("--no-asha (the study uses ASHA)" if flag == "--no-asha"
                           else f"{flag} {value} (the study has {recorded})")
    if changes:
        raise StudyError(f"cannot resume study {saved.name!r} with changes: {'; '.join(changes)}. --resume continues "
                         "the study as it started (same CONFIG, --set, --space and options); for other settings start "
                         "a new study with another --name")


def _check_data(base: RunConfig, address: RayAddress) -> None:
    """Read the data as the trials will, before Ray starts: every label parsed, every image header read,
    one line naming the file (a synthetic set is generated here once, rather than racing in trials).
    With Ray Client the trials may see a root this machine lacks: then the trials read it themselves."""
    if address.is_client and base.data.format != "synthetic" and not Path(base.data.root).exists():
        return
    check_data(base)


def _study_tags(options: StudyOptions, seed: int) -> dict[str, str]:
    tags = {f"version.{k}": v for k, v in tracking.package_versions().items()}
    commit = tracking.git_commit(Path(__file__).resolve().parent)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tags.update({"mssd.metric": options.metric, "mssd.mode": options.mode, "mssd.seed": str(seed),
                 "mssd.space": Path(options.space).name})
    return tags


def run_study(options: StudyOptions) -> StudySummary:
    """Run (or resume) a study; see the module docstring. Raises MSSDError with one line on bad input."""
    started = time.monotonic()
    options, base, space, folder, meta = _prepare(options)
    fault = faults.faults_from_env()
    recorded = recorded_tracking_uri(meta, options.workdir) if meta else None
    uri = tracking.resolve_tracking_uri(base.tracking.uri, options.workdir, recorded)
    if meta:  # a resumed study: only the store next to it (never the original of a moved copy)
        check_store_placement(uri, options.workdir, meta)
    address = options.ray_address
    check_local_gpus(options.gpus_per_trial, address.text)
    address.check_client_mode(uri, options.storage)
    _check_data(base, address)
    address.check_reachable()
    print(tracking.check_tracking(uri), flush=True)
    storage = options.storage or str(Path(options.workdir).resolve())
    config_text = config_to_yaml(base)
    if not options.resume:
        meta = {"name": options.name, "options": options.to_json(), "tracking_uri": store_record(uri, options.workdir),
                "tracking_uri_has_secret": tracking.redact_uri(uri) != uri, "storage": storage,
                "metric": options.metric, "mode": options.mode, "searched": space.keys,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_study_files(folder, meta, config_text, space.text)

    seed = options.seed if options.seed is not None else base.seed
    tracker = tracking.StudyTracker(uri, options.name, staging_dir=folder / ".mlflow-staging",
                                    artifact_root=Path(options.workdir).resolve() / "mlartifacts",
                                    tags=_study_tags(options, seed),
                                    artifacts={BASE_CONFIG: config_text, SEARCH_SPACE: space.text},
                                    experiment_tags=mlflow_view.experiment_tags(options.metric, options.mode,
                                                                                space.keys))
    tracker.start()
    key = options.name
    TRACKERS[key] = tracker

    experiment_path = f"{storage.rstrip('/')}/{options.name}"
    if options.resume:
        backfill(experiment_path, tracker, base, space.keys)
        if address.is_client:  # the head's tracker reads the child runs at its start: let the back-fill land first
            tracker.flush(options.flush_timeout)
    init_ray(address, options.verbose)
    check_storage(storage)
    trainable = build_trainable(base, metric=options.metric, mode=options.mode, cpus=options.cpus_per_trial,
                                gpus=options.gpus_per_trial, fault=fault, marker_dir=folder / ".faults",
                                verbose=options.verbose)
    status = "FINISHED"
    try:
        # Tune reads the output mode when the Tuner is made, and in fit; Ctrl-C is ours (_sigint_is_ours)
        with ray_output(options.verbose), _sigint_is_ours():
            if options.resume:
                if not tune.Tuner.can_restore(experiment_path):
                    raise StudyError(f"nothing to resume at {experiment_path} (the study never started a trial)")
                tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                           resume_errored=False, restart_errored=False)
            else:
                settings = ({"uri": uri, "study": options.name, "parent_run_id": tracker.parent_run_id,
                             "flush_timeout": options.flush_timeout} if address.is_client else None)
                tuner = _new_tuner(options, base, space, folder, storage, trainable, seed, settings)
            results = tuner.fit()
    except KeyboardInterrupt:
        status = "KILLED"
        resume = resume_command(options)
        stopped = tracker.interrupt_trials(f"interrupted; `{resume}` continues it")
        print(f"mssd: study {options.name} interrupted ({len(stopped)} running trial(s) marked KILLED in MLflow); "
              f"resume it with: {resume}", file=sys.stderr, flush=True)
        raise
    except BaseException:
        status = "KILLED"
        raise
    finally:
        tracker.summarize(options.metric, options.mode, space.keys, space.text)
        unlogged = _finish_tracking(tracker, status, options.flush_timeout if status == "FINISHED" else 30.0)
        TRACKERS.pop(key, None)
    return _summarise(options, folder, uri, results, unlogged, time.monotonic() - started)


@contextlib.contextmanager
def _sigint_is_ours() -> Iterator[None]:
    """Ctrl-C during ``Tuner.fit`` raises KeyboardInterrupt here, as in ``mssd train``: Tune's own handler
    would end the sweep as if it had finished (exit 0, the interrupted trials counted as stopped early,
    RUNNING in MLflow) and print a ``Tuner.restore`` hint. Tune's periodic experiment snapshot is what
    ``--resume`` restores, as after a killed driver."""
    before = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = before


def resume_command(options: StudyOptions) -> str:
    """The command that continues this study (the same CONFIG, --set and --space: ``check_unchanged``)."""
    sets = [arg for override in options.overrides for arg in ("--set", override)]
    return shlex.join(["mssd", "tune", options.config, *sets, "--space", options.space, "--resume",
                       "--name", str(options.name), "--workdir", str(options.workdir)])


def _summarise(options: StudyOptions, folder: Path, uri: str, results: Any, unlogged: int,
               elapsed: float) -> StudySummary:
    statuses: dict[str, int] = {}
    from_tune = []
    for result in results:
        metrics = result.metrics or {}
        state = "error" if result.error else trial_status(metrics)
        statuses[state] = statuses.get(state, 0) + 1
        from_tune.append(tracking.TrialRecord(run_id="", trial_id=str(metrics.get("trial_id", "")), name="",
                                              status=state, params={}, metrics=_numbers(metrics), searched=[],
                                              artifact_uri=""))
    best = _best_trial(options, uri, unlogged, from_tune)
    return StudySummary(options.name, folder, tracking.redact_uri(uri), statuses,
                        None if best is None else (best.name.split(" ", 1)[0] or best.trial_id),
                        None if best is None else best.metrics[options.metric], unlogged, elapsed, options.metric)


def _best_trial(options: StudyOptions, uri: str, unlogged: int,
                from_tune: list[tracking.TrialRecord]) -> tracking.TrialRecord | None:
    """The best trial by the study's one ranking (``study.export.rank_trials``) over what MLflow holds, as
    ``mssd export`` and the parent run's tag see it (a resumed study: every driver's trials); only when
    MLflow missed writes or cannot be read, Tune's own results of this driver."""
    from study.export import rank_trials

    if not unlogged:
        try:
            ranked = rank_trials(tracking.study_trials(uri, options.name), options.metric, options.mode)
        except tracking.TrackingError:
            ranked = None
        if ranked is not None:
            return ranked[0] if ranked else None
    ranked = rank_trials(from_tune, options.metric, options.mode)
    return ranked[0] if ranked else None


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _finish_tracking(tracker: tracking.StudyTracker, status: str, timeout: float) -> int:
    tracker.study_finished(status)
    left = tracker.flush(timeout)
    if left:
        print(f"mssd: {left} MLflow writes could not be made (tracking store unreachable); the results are "
              "kept in the study folder and `mssd tune --resume --name NAME` back-fills them", file=sys.stderr)
    return left


def _progress_columns(space: SearchSpace) -> list[str]:
    """The live table's param columns: a one_at_a_time point's label (Ray flattens nested config with /)."""
    return [f"{POINT_KEY}/label"] if space.design == "one_at_a_time" else space.keys


def _new_tuner(options: StudyOptions, base: RunConfig, space: SearchSpace, folder: Path, storage: str,
               trainable: Any, seed: int, settings: dict[str, Any] | None = None) -> Any:
    if space.is_grid:
        search_alg = None  # BasicVariantGenerator: every grid point, `samples` times
        num_samples = options.samples or 1
    else:
        search_alg = build_searcher(options.name, seed, folder, storage, settings is not None)
        num_samples = options.samples or 8
    scheduler = None
    if options.asha:
        epochs = base.train.epochs
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max(epochs, 1),
                                  grace_period=min(resolve_grace_period(options.grace_period, epochs), epochs),
                                  reduction_factor=options.reduction_factor)
    tune_config = tune.TuneConfig(
        metric=options.metric, mode=options.mode, search_alg=search_alg, scheduler=scheduler,
        num_samples=num_samples, max_concurrent_trials=options.max_concurrent,
        # One worker process per slot, reused by the next trial: saves torch's ~5 s import per trial.
        reuse_actors=True,
        trial_name_creator=lambda t: f"trial_{t.trial_id}", trial_dirname_creator=lambda t: f"trial_{t.trial_id}")
    run_config = tune.RunConfig(
        name=options.name, storage_path=storage, **reporting(options.verbose, options.metric, _progress_columns(space)),
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=options.keep_checkpoints),
        callbacks=[MLflowCallback(options.name, base, space.keys, options.metric, settings)])
    return tune.Tuner(trainable, param_space=build_param_space(space), tune_config=tune_config,
                      run_config=run_config)
