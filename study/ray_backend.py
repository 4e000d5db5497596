"""Ray Tune sweeps: the only module that imports ``ray``.

``run_study(options)`` runs one study end to end:

1. loads the base config and the search space (one-line errors), checks the MLflow store (one line
   when unreachable) -- all before Ray starts or any trial runs;
2. starts or joins Ray (``--address auto|ray://...``); refuses a multi-host cluster whose storage is a
   plain local path (a ``file://`` URI declares a mount that every node sees; ``s3://`` etc. work too);
3. builds a ``Tuner`` (or ``Tuner.restore`` with ``--resume``): the function trainable ``_train_trial``
   runs ``detectors.engine.trainer.fit`` and, after every epoch, ``tune.report``s the metrics with a
   checkpoint (``last.pt`` + ``best.pt``); on start it resumes from ``tune.get_checkpoint()``;
4. sampled spaces use ``OptunaSearch`` (TPE, multivariate, seeded; study kept in
   ``<study>/optuna.db``); grid spaces use ``tune.grid_search`` (every point, ``--samples`` times);
   ``ASHAScheduler`` on the study metric with ``time_attr="epoch"`` unless switched off;
5. a driver-side ``Callback`` feeds ``study.tracking.StudyTracker`` (the single MLflow writer).

Ray Client (``--address ray://HOST:PORT``): Tune then runs ``Tuner.fit`` in an actor on the head node,
so the Tune driver -- and the MLflow callback -- live there, not in this process. Before anything starts,
such a study needs an http(s) tracking server (the head cannot write this machine's SQLite file) and
``--storage`` as a URI the head reaches (``s3://...``, or ``file:///mount`` asserting a mount that this
machine and every node see at that path). The callback carries picklable settings (tracking URI, study
name, parent run id) and builds its own ``StudyTracker`` on the head, which finds the parent run this
process created (through the head's own ``MLFLOW_TRACKING_URI`` when that names the same server);
``MLFLOW_TRACKING_USERNAME`` / ``PASSWORD`` (and ``MLFLOW_TRACKING_TOKEN`` / ``INSECURE_TLS``) are
forwarded to the head through the job's ``runtime_env`` env_vars. The Optuna study lives in
``<storage>/<study>/optuna.db`` for a ``file://`` storage, in memory on the head otherwise (Tune's own
searcher checkpoints still make ``--resume`` work).

What Optuna is told (``_StudyOptunaSearch``): every evaluated epoch is an intermediate value at
``step = epoch``; a trial that trained all its epochs is ``COMPLETE`` with its last value; a trial
that ASHA stopped early is ``PRUNED`` (not ``COMPLETE`` with an early, low value, which TPE would
compare with full-budget results): TPE ranks pruned trials below every complete one, the ones that got
further first, so it learns "bad region" without mistaking a 1-epoch mAP for a final one. Non-finite
and crashed trials are ``FAIL`` and ignored by TPE.

A non-finite loss (``NonFiniteLossError``) is caught in the trainable, which reports one terminal
result ``{"nonfinite": 1, <metric>: worst}`` and returns: the trial ends at once, is never retried
(retrying would diverge again), is marked ``nonfinite`` in MLflow and ``FAIL`` in Optuna, and the
others go on. Any other exception propagates to Tune, which retries up to ``max_failures`` times from
the last reported checkpoint.

Public API: ``StudyOptions``, ``run_study(options) -> StudySummary``, ``study_dir(workdir, name)``,
``load_study_meta(workdir, name)``, ``start_local_ray(num_cpus) -> address``, ``stop_ray()``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from detectors.config import config_to_dict, flatten_config, parse_config
from detectors.errors import ConfigError, MSSDError, NonFiniteLossError
from study import faults, tracking
from study.config import config_to_yaml, load_config, write_text_atomic
from study.search_space import SearchSpace, apply_params, load_search_space

META_FILE = "study.json"


class StudyError(MSSDError):
    """A study cannot start or continue (name clash, nothing to resume, storage unusable)."""


@dataclass
class StudyOptions:
    config: str
    space: str
    overrides: list[str] = field(default_factory=list)
    name: str | None = None
    workdir: str = "runs"
    samples: int | None = None  # sampled spaces: number of trials (default 8); grid: repeats (default 1)
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    storage: str | None = None  # default: the workdir; any pyarrow URI (s3://, gs://, file:///shared)
    resume: bool = False
    metric: str = "map"
    mode: str = "max"
    asha: bool = True
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_failures: int = 2
    keep_checkpoints: int = 2
    seed: int | None = None
    verbose: int | None = None  # None: Ray's live table on a terminal, quiet lines otherwise
    flush_timeout: float = 300.0


@dataclass
class StudySummary:
    name: str
    folder: Path
    tracking_uri: str
    statuses: dict[str, int]
    best_trial: str | None
    best_value: float | None
    unlogged: int  # MLflow writes still pending at exit (back-filled by --resume)
    elapsed_s: float

    def describe(self, workdir: str | Path) -> str:
        """What a user reads at the end of a sweep: counts, the best trial, the commands to run next."""
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        lines = [f"study {self.name}: {counts} in {self.elapsed_s:.0f} s; folder {self.folder}"]
        if self.best_trial:
            lines.append(f"best trial {self.best_trial}: {self.best_value:.4f}")
        lines.append(f"next: mssd export {self.name} --workdir {workdir} --out best.yaml;  "
                     f"mssd report {self.name} --workdir {workdir};  mssd ui --workdir {workdir}")
        return "\n".join(lines)


def study_dir(workdir: str | Path, name: str) -> Path:
    return Path(workdir).resolve() / name


def load_study_meta(workdir: str | Path, name: str) -> dict[str, Any]:
    path = study_dir(workdir, name) / META_FILE
    if not path.is_file():
        raise StudyError(f"no study {name!r} in {Path(workdir)} (expected {path})")
    return json.loads(path.read_text())


def _default_name(space: Path) -> str:
    return f"{space.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _absolute_paths(data: dict) -> dict:
    """Trials run in Ray's per-trial working folder: make config paths absolute before shipping them."""
    data["data"]["root"] = str(Path(data["data"]["root"]).resolve())
    if data["detector"].get("weights"):
        data["detector"]["weights"] = str(Path(data["detector"]["weights"]).resolve())
    return data


def _is_uri(storage: str) -> bool:
    return "://" in storage


RAY_CLIENT_PREFIX = "ray://"
RAY_CLIENT_DEFAULT_PORT = 10001
RAY_CONNECT_TIMEOUT_S = 5.0
# What the MLflow client on the head needs to authenticate: forwarded in the job's runtime_env (client mode).
_FORWARDED_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                  "MLFLOW_TRACKING_INSECURE_TLS")


def _is_client_address(address: str | None) -> bool:
    return bool(address) and address.startswith(RAY_CLIENT_PREFIX)


def _head_endpoint(address: str | None) -> tuple[str, int] | None:
    """``(host, port)`` to probe for ``HOST:PORT`` (the GCS) or ``ray://HOST[:PORT]`` (the Ray Client
    server); None for ``auto``/no address/anything else, which Ray resolves itself."""
    if not address or address in ("auto", "local"):
        return None
    rest = address[len(RAY_CLIENT_PREFIX):] if _is_client_address(address) else address
    rest = rest.split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep:
        return (rest, RAY_CLIENT_DEFAULT_PORT) if _is_client_address(address) and rest else None
    host = host.strip("[]")
    if not host or not port.isdigit():
        return None
    return host, int(port)


def check_ray_reachable(address: str | None, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """One TCP connection to the head's port, bounded by ``timeout``: ``ray.init`` itself retries an
    unreachable head for minutes. Raises ``StudyError`` with one line."""
    endpoint = _head_endpoint(address)
    if endpoint is None:
        return
    host, port = endpoint
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except ConnectionRefusedError:
        reason = "connection refused"
    except TimeoutError:
        reason = f"no answer within {timeout:.0f} s"
    except socket.gaierror:
        reason = "unknown host"
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
    what = "Ray Client server" if _is_client_address(address) else "GCS"
    raise StudyError(f"Ray head {host}:{port} unreachable ({reason}); is the head running and its {what} port "
                     f"{port} published? (--address {address})")


def _check_client_mode(address: str, uri: str, storage: str | None) -> None:
    """Refuse, in one line each, what cannot work when the Tune driver runs on the head (module docstring)."""
    if uri.startswith("sqlite:"):
        raise StudyError(f"--address {address}: with Ray Client the Tune driver runs on the head node, which "
                         f"cannot write this machine's SQLite store {uri}; set MLFLOW_TRACKING_URI (or "
                         "tracking.uri) to an http(s):// tracking server")
    if not tracking.is_http_uri(uri):
        raise StudyError(f"--address {address}: with Ray Client the head node logs to MLflow; expected an "
                         f"http(s):// tracking server, got {tracking.redact_uri(uri)}")
    if tracking.redact_uri(uri) != uri:
        raise StudyError(f"--address {address}: the tracking URI {tracking.redact_uri(uri)} embeds a password, "
                         "which would be stored with the Tune experiment; use MLFLOW_TRACKING_USERNAME and "
                         "MLFLOW_TRACKING_PASSWORD instead")
    if not storage or not _is_uri(storage):
        raise StudyError(f"--address {address}: with Ray Client the head node writes the trials and checkpoints, "
                         "so a path on this machine cannot hold them; pass --storage s3://... or "
                         "file:///a/mount/seen/at/that/path/by/this/machine/and/every/node")
    if storage.startswith("file://"):
        path = Path(storage[len("file://"):])
        if not (path.is_dir() or path.parent.is_dir()):
            raise StudyError(f"--address {address}: --storage {storage} is not mounted on this machine ({path} "
                             "does not exist here); with Ray Client a file:// storage must be a mount that this "
                             "machine and every node see at the same path; else pass --storage s3://...")


# ---------------------------------------------------------------------------------------------
# the trainable (runs in a Ray worker)


class _TuneReporter:
    """``fit`` callback: after each epoch, report metrics and the epoch's checkpoint to Tune."""

    def __init__(self, workdir: Path, epochs: int, metric: str) -> None:
        self.workdir, self.epochs, self.metric = workdir, epochs, metric
        self.last_epoch = 0
        self.last_value: float | None = None

    def after_epoch(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        result: dict[str, Any] = {k: float(v) for k, v in metrics.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        result["epoch"] = epoch
        result["final"] = float(epoch >= self.epochs)
        # Epochs without evaluation (train.eval_interval > 1) carry the last value for Tune and ASHA,
        # flagged so MLflow logs only real evaluations.
        result["evaluated"] = float(self.metric in result)
        if self.metric in result:
            self.last_value = result[self.metric]
        elif self.last_value is not None:
            result[self.metric] = self.last_value
        else:
            result[self.metric] = 0.0
        source = Path(trainer.last_checkpoint)
        staging = Path(tempfile.mkdtemp(prefix=".report-", dir=self.workdir))
        try:
            for name in ("last.pt", "best.pt"):
                path = source if name == "last.pt" else source.with_name("best.pt")
                if path.is_file():
                    _link_or_copy(path, staging / name)
            (staging / "epoch.json").write_text(json.dumps({"epoch": epoch}))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(staging)))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.last_epoch = epoch


def _checkpoint_candidates(latest: Any) -> list[Any]:
    """The latest reported checkpoint, then the older ones Tune kept beside it, newest first."""
    import pyarrow.fs as pafs

    candidates = [latest]
    try:
        parent, _, name = latest.path.rstrip("/").rpartition("/")
        infos = latest.filesystem.get_file_info(pafs.FileSelector(parent))
        older = sorted((i.base_name for i in infos if i.type == pafs.FileType.Directory
                        and i.base_name.startswith("checkpoint_") and i.base_name < name), reverse=True)
        candidates += [tune.Checkpoint(f"{parent}/{n}", filesystem=latest.filesystem) for n in older]
    except (OSError, AttributeError):
        pass
    return candidates


def _restore_checkpoint(latest: Any, local: Path) -> int | None:
    """Copy the newest complete checkpoint into ``local``; return its epoch (None: start afresh).

    A truncated or missing ``last.pt`` (e.g. a node lost mid-upload) must not fail every retry: such a
    checkpoint is skipped for the previous complete one."""
    from detectors.engine.checkpoint import load_checkpoint

    local.mkdir(parents=True, exist_ok=True)
    for candidate in _checkpoint_candidates(latest):
        try:
            with candidate.as_directory() as folder:
                epoch = int(json.loads((Path(folder) / "epoch.json").read_text())["epoch"])
                load_checkpoint(Path(folder) / "last.pt")  # reads it fully: a truncated file fails here
                for name in ("last.pt", "best.pt"):
                    if (Path(folder) / name).is_file():
                        shutil.copyfile(Path(folder) / name, local / name)
            return epoch
        except (OSError, ValueError, KeyError, MSSDError) as exc:
            print(f"mssd: checkpoint {candidate.path} is unusable ({exc}); trying the previous one",
                  file=sys.stderr)
    return None


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _train_trial(config: dict[str, Any], *, base: dict, metric: str, mode: str, fault: str | None,
                 marker_dir: str) -> None:
    import torch

    cfg = parse_config(apply_params(base, config))
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    # Local scratch for the trainer's own files; what must survive is reported to Tune as checkpoints.
    # (Not the cwd: with reused actors several trials run in one process, one after the other.)
    workdir = Path(tempfile.gettempdir()) / "mssd-trials" / tune.get_context().get_trial_id()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        _fit_trial(cfg, workdir, metric=metric, mode=mode, fault=fault, marker_dir=marker_dir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _fit_trial(cfg: Any, workdir: Path, *, metric: str, mode: str, fault: str | None, marker_dir: str) -> None:
    from detectors.engine.trainer import fit

    resume, start_epoch = None, 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        restored = _restore_checkpoint(checkpoint, workdir / "checkpoints")
        if restored is not None:
            resume, start_epoch = workdir / "checkpoints" / "last.pt", restored + 1
    reporter = _TuneReporter(workdir, cfg.train.epochs, metric)
    reporter.last_epoch = start_epoch - 1
    callbacks: list[Any] = [reporter]
    specs = faults.parse_faults(fault)
    if specs:
        callbacks.append(faults.FaultInjector(specs, trial_id=tune.get_context().get_trial_id(),
                                              flat_config=flatten_config(cfg), marker_dir=marker_dir,
                                              start_epoch=start_epoch))
    try:
        fit(cfg, workdir, callbacks=callbacks, resume=resume)
    except NonFiniteLossError as exc:
        worst = -math.inf if mode == "max" else math.inf
        tune.report({"nonfinite": 1.0, "epoch": reporter.last_epoch + 1, metric: worst, "final": 0.0,
                     "evaluated": 0.0, "error": str(exc)})


# ---------------------------------------------------------------------------------------------
# driver side: Optuna, MLflow


class _StudyOptunaSearch(OptunaSearch):
    """OptunaSearch that tells TPE the truth about early-stopped and failed trials (module docstring)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get("nonfinite") or not result.get("evaluated", 1.0):
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and self.metric in result and trial_id not in self._completed_trials:
            self._report(trial_id, ot_trial, float(result[self.metric]), int(result.get("epoch", 0)))

    def _report(self, trial_id: str, ot_trial: Any, value: float, epoch: int) -> None:
        reported = self.__dict__.setdefault("_mssd_reported", {}).setdefault(trial_id, set())
        if not math.isfinite(value) or epoch in reported or self._finished_in_storage(ot_trial):
            return
        ot_trial.report(value, epoch)
        reported.add(epoch)

    def _finished_in_storage(self, ot_trial: Any) -> bool:
        # After a driver restart the searcher's snapshot may predate a tell that reached optuna.db
        # (the trial is then resumed by Tune from its last checkpoint): never report or tell twice.
        return self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()

    def restore(self, checkpoint_path: str) -> None:
        """After a driver restart: Optuna trials still RUNNING in optuna.db that the restored searcher does
        not track were lost with the old driver; fail them so TPE does not count them as pending."""
        from optuna.trial import TrialState

        super().restore(checkpoint_path)
        tracked = {t._trial_id for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in tracked:
                self._ot_study._storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return
        if self._finished_in_storage(ot_trial):
            self._completed_trials.add(trial_id)
            return
        value = None if result is None else result.get(self.metric)
        if error or result is None or result.get("nonfinite") or value is None or not math.isfinite(value):
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


def _guarded(method: Any) -> Any:
    """Tracking must never fail a trial: an exception in a callback becomes one warning line."""
    import functools

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except _TrackerUnavailable:
            pass  # said once, when it failed to start
        except Exception as exc:
            print(f"mssd: MLflow callback {method.__name__} failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    return wrapper


class _TrackerUnavailable(Exception):
    """The head-side tracker (Ray Client) could not start; trials go on, ``--resume`` back-fills MLflow."""


# Trackers live in the driver process; the (pickled, restorable) callback finds its own by key.
_TRACKERS: dict[str, tracking.StudyTracker] = {}


class _MLflowCallback(tune.Callback):
    """Feeds the study's ``StudyTracker``. In the driver process it uses the tracker ``run_study`` made;
    where none exists (Ray Client: Tune's driver is an actor on the head) it builds one from ``settings``
    (``uri``, ``study``, ``parent_run_id``, ``flush_timeout``: picklable, no secrets), which finds the
    existing parent run."""

    def __init__(self, key: str, base: dict, searched: list[str], metric: str,
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
        tracker = _TRACKERS.get(self.key)
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
            _TRACKERS[self.key] = tracker
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
        cfg = parse_config(apply_params(self.base, trial.config))
        self.tracker.trial_started(trial.trial_id, str(trial), flatten_config(cfg), self.searched)

    @_guarded
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started(trial)

    @_guarded
    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started(trial)

    @_guarded
    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get("nonfinite") or "epoch" not in result:
            return
        metrics = {k: v for k, v in result.items() if k in _metric_keys(result)}
        if not result.get("evaluated", 1.0):
            metrics = {k: v for k, v in metrics.items() if not _is_eval_metric(k)}
        self.tracker.trial_epoch(trial.trial_id, int(result["epoch"]), metrics, result.get("timestamp"))

    @_guarded
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get("nonfinite"):
            status, error = "nonfinite", str(last.get("error", "non-finite loss"))
        elif last.get("final"):
            status, error = "completed", None
        else:
            status, error = "early_stopped", None
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
            _TRACKERS.pop(self.key, None)
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


_TUNE_KEYS = {"timestamp", "training_iteration", "time_this_iter_s", "time_total_s", "pid", "hostname",
              "node_ip", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "done",
              "trial_id", "date", "config", "experiment_tag", "should_checkpoint", "final", "evaluated",
              "nonfinite", "error"}


def _metric_keys(result: dict) -> set[str]:
    return {k for k, v in result.items() if k not in _TUNE_KEYS and isinstance(v, (int, float))
            and not isinstance(v, bool)}


def _is_eval_metric(key: str) -> bool:
    return key in ("map", "ap50", "ap75", "aps", "apm", "apl") or key.startswith("ap/")


# ---------------------------------------------------------------------------------------------
# the driver


def _init_ray(address: str | None) -> None:
    # Tune forces an experiment snapshot whenever a trial has written num_to_keep checkpoints, and warns
    # each time; with per-epoch checkpoints that is expected (a snapshot costs milliseconds here).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if _is_client_address(address):
        # The head's MLflow client (in the Tune driver actor) authenticates with these; the job's
        # runtime_env is visible to whoever can list the cluster's jobs (the Ray token's holders).
        forwarded = {k: os.environ[k] for k in _FORWARDED_ENV if os.environ.get(k)}
        kwargs = {"runtime_env": {"env_vars": forwarded}} if forwarded else {}
        # INFO lines a client user cannot act on ("Passing the following kwargs...", "legacy output").
        for name in ("ray.client_builder", "ray.tune.tuner"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # A busy head's Ray Client proxy sometimes fails to start the per-client server on the first try
    # (seen on a loaded 2-core machine); one more attempt usually gets it. Other errors are final.
    attempts = 2 if _is_client_address(address) else 1
    for attempt in range(1, attempts + 1):
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(**kwargs)
            return
        except (ConnectionError, RuntimeError, ValueError) as exc:
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            start_failed = _is_client_address(address) and line.startswith("Initialization failure from server")
            if not (start_failed and attempt < attempts):
                break
            print("mssd: the head's Ray Client server did not start a server for this client; trying once more",
                  file=sys.stderr)
            ray.shutdown()  # drop the half-made client connection before the next attempt
            time.sleep(5)
    if start_failed:
        line = ("the head's Ray Client server could not start a server for this client in time (see "
                "ray_client_server*.log on the head; a busy head may need a larger "
                "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S, default 30 s, in its environment)")
    raise StudyError(f"cannot join the Ray cluster at {address or 'local'}: {line}") from None


def start_local_ray(num_cpus: int) -> str:
    """Start (or reuse) a local Ray instance; returns its address for ``--address`` (tests, demo)."""
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False)
    return ray.get_runtime_context().gcs_address


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


def _check_storage(storage: str) -> None:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    hosts = {n.get("NodeManagerAddress") for n in nodes}
    if len(hosts) > 1 and not _is_uri(storage):
        raise StudyError(f"the Ray cluster spans {len(hosts)} hosts but storage {storage} is a local path that "
                         "the other nodes cannot see; pass --storage s3://... or file:///a/shared/mount")


def _build_param_space(space: SearchSpace) -> dict[str, Any]:
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


def _trainable(base: dict, options: StudyOptions, fault: str | None, folder: Path) -> Any:
    fn = tune.with_parameters(_train_trial, base=base, metric=options.metric, mode=options.mode, fault=fault,
                              marker_dir=str(folder / ".faults"))
    resources = {"cpu": options.cpus_per_trial}
    if options.gpus_per_trial:
        resources["gpu"] = options.gpus_per_trial
    return tune.with_resources(fn, resources)


def _prepare(options: StudyOptions) -> tuple[StudyOptions, dict, SearchSpace, Path, str]:
    """Resolve a new or resumed study: options, base config dict, space, folder, config text."""
    if options.resume:
        if not options.name:
            raise StudyError("--resume needs --name NAME of the study to continue")
        meta = load_study_meta(options.workdir, options.name)
        folder = study_dir(options.workdir, options.name)
        saved = StudyOptions(**{**meta["options"], "resume": True, "workdir": options.workdir,
                                "verbose": options.verbose, "address": options.address or meta["options"]["address"]})
        space = load_search_space(folder / "search-space.yaml")
        cfg = load_config(folder / "base-config.yaml")
        return saved, _absolute_paths(config_to_dict(cfg)), space, folder, config_to_yaml(cfg)
    space = load_search_space(options.space)
    cfg = load_config(options.config, options.overrides)
    name = options.name or _default_name(Path(options.space))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise ConfigError(f"--name {name!r}: expected letters, digits, '.', '_' or '-' (it names a folder "
                          "and an MLflow experiment)")
    options = StudyOptions(**{**asdict(options), "name": name})
    folder = study_dir(options.workdir, name)
    if (folder / META_FILE).exists():
        raise StudyError(f"study {name!r} already exists in {folder}; pass --resume to continue it or "
                         "another --name")
    if options.samples is not None and options.samples < 1:
        raise ConfigError(f"--samples: expected at least 1, got {options.samples}")
    if options.mode not in ("max", "min"):
        raise ConfigError(f"--mode: expected max or min, got {options.mode!r}")
    return options, _absolute_paths(config_to_dict(cfg)), space, folder, config_to_yaml(cfg)


def _prepare_data(base: dict) -> None:
    """Generate a synthetic set once, in the driver, rather than racing in concurrent trials."""
    if base["data"]["format"] == "synthetic":
        from detectors.data import load_samples

        load_samples(parse_config(base).data, "train")


def run_study(options: StudyOptions) -> StudySummary:
    """Run (or resume) a study; see the module docstring. Raises MSSDError with one line on bad input."""
    started = time.monotonic()
    options, base, space, folder, config_text = _prepare(options)
    fault = faults.faults_from_env()
    uri = tracking.resolve_tracking_uri(base["tracking"]["uri"], options.workdir)
    client_mode = _is_client_address(options.address)
    if client_mode:
        _check_client_mode(options.address, uri, options.storage)
    check_ray_reachable(options.address)
    _prepare_data(base)
    print(tracking.check_tracking(uri), flush=True)
    storage = options.storage or str(Path(options.workdir).resolve())
    folder.mkdir(parents=True, exist_ok=True)
    if not options.resume:
        write_text_atomic(folder / "base-config.yaml", config_text)
        write_text_atomic(folder / "search-space.yaml", space.text)
        meta = {"name": options.name, "options": asdict(options), "tracking_uri": tracking.redact_uri(uri),
                "tracking_uri_has_secret": tracking.redact_uri(uri) != uri, "storage": storage,
                "metric": options.metric, "mode": options.mode, "searched": space.keys,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_text_atomic(folder / META_FILE, json.dumps(meta, indent=2) + "\n")

    seed = options.seed if options.seed is not None else int(base["seed"])
    tags = {f"version.{k}": v for k, v in tracking.package_versions().items()}
    commit = tracking.git_commit(Path(__file__).resolve().parent)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tags.update({"mssd.metric": options.metric, "mssd.mode": options.mode, "mssd.seed": str(seed),
                 "mssd.space": Path(options.space).name})
    tracker = tracking.StudyTracker(uri, options.name, staging_dir=folder / ".mlflow-staging",
                                    artifact_root=Path(options.workdir).resolve() / "mlartifacts", tags=tags,
                                    artifacts={"base-config.yaml": config_text, "search-space.yaml": space.text})
    tracker.start()
    key = options.name
    _TRACKERS[key] = tracker

    experiment_path = f"{storage.rstrip('/')}/{options.name}"
    if options.resume:
        _backfill(experiment_path, tracker, base, space.keys)
        if client_mode:  # the head's tracker reads the child runs at its start: let the back-fill land first
            tracker.flush(options.flush_timeout)
    _init_ray(options.address)
    _check_storage(storage)
    trainable = _trainable(base, options, fault, folder)
    status = "FINISHED"
    try:
        if options.resume:
            if not tune.Tuner.can_restore(experiment_path):
                raise StudyError(f"nothing to resume at {experiment_path} (the study never started a trial)")
            tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
        else:
            settings = ({"uri": uri, "study": options.name, "parent_run_id": tracker.parent_run_id,
                         "flush_timeout": options.flush_timeout} if client_mode else None)
            tuner = _new_tuner(options, base, space, folder, storage, trainable, key, seed, settings)
        results = tuner.fit()
    except BaseException:
        status = "KILLED"
        raise
    finally:
        unlogged = _finish_tracking(tracker, status, options.flush_timeout if status == "FINISHED" else 30.0)
        _TRACKERS.pop(key, None)

    statuses: dict[str, int] = {}
    best_trial, best_value = None, None
    for result in results:
        metrics = result.metrics or {}
        state = ("error" if result.error else "nonfinite" if metrics.get("nonfinite")
                 else "completed" if metrics.get("final") else "early_stopped")
        statuses[state] = statuses.get(state, 0) + 1
        value = metrics.get(options.metric)
        if state == "completed" and isinstance(value, (int, float)) and math.isfinite(value):
            better = best_value is None or (value > best_value if options.mode == "max" else value < best_value)
            if better:
                best_trial, best_value = metrics.get("trial_id"), float(value)
    return StudySummary(options.name, folder, tracking.redact_uri(uri), statuses, best_trial, best_value,
                        unlogged, time.monotonic() - started)


def _trial_results(experiment_path: str) -> list[str]:
    """The text of every trial's ``result.json`` under a local path or any pyarrow URI."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(experiment_path if _is_uri(experiment_path)
                                        else str(Path(experiment_path).resolve()))
    texts = []
    for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name.startswith("trial_"):
            path = f"{info.path}/result.json"
            if fs.get_file_info(path).type == pafs.FileType.File:
                with fs.open_input_stream(path) as stream:
                    texts.append(stream.read().decode())
    return texts


def _backfill(experiment_path: str, tracker: tracking.StudyTracker, base: dict, searched: list[str]) -> None:
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
            config = rows[0].get("config") or {}
            cfg = parse_config(apply_params(base, config))
            tracker.trial_started(trial_id, f"trial_{trial_id}", flatten_config(cfg), searched)
        for row in rows:
            if row.get("nonfinite"):
                continue
            metrics = {k: v for k, v in row.items() if k in _metric_keys(row)}
            if not row.get("evaluated", 1.0):
                metrics = {k: v for k, v in metrics.items() if not _is_eval_metric(k)}
            tracker.trial_epoch(trial_id, int(row["epoch"]), metrics, row.get("timestamp"))
        if new:  # its status as far as the results tell; a trial Tune resumes updates it again
            last = rows[-1]
            status = "nonfinite" if last.get("nonfinite") else "completed" if last.get("final") else "early_stopped"
            tracker.trial_finished(trial_id, status, error=last.get("error"))


def _finish_tracking(tracker: tracking.StudyTracker, status: str, timeout: float) -> int:
    tracker.study_finished(status)
    left = tracker.flush(timeout)
    if left:
        print(f"mssd: {left} MLflow writes could not be made (tracking store unreachable); the results are "
              "kept in the study folder and `mssd tune --resume --name NAME` back-fills them", file=sys.stderr)
    return left


def _optuna_storage(options: StudyOptions, folder: Path, storage: str, client_mode: bool) -> Any:
    """``<study>/optuna.db``; with Ray Client the searcher runs on the head: beside the trials on a
    ``file://`` mount, else in memory there (Tune checkpoints the searcher for --resume)."""
    import optuna

    if not client_mode:
        return optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}")
    if storage.startswith("file://"):
        import pyarrow.fs as pafs

        _, path = pafs.FileSystem.from_uri(storage)
        shared = Path(path) / options.name
        try:
            shared.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(f"--storage {storage}: cannot create {shared} on this machine ({exc.strerror})") from None
        return optuna.storages.RDBStorage(f"sqlite:///{shared / 'optuna.db'}")
    print(f"mssd: the Optuna study is kept in memory on the Ray head ({storage} cannot hold a SQLite file)",
          flush=True)
    return None


def _new_tuner(options: StudyOptions, base: dict, space: SearchSpace, folder: Path, storage: str,
               trainable: Any, key: str, seed: int, settings: dict[str, Any] | None = None) -> Any:
    import optuna

    param_space = _build_param_space(space)
    if space.is_grid:
        search_alg = None  # BasicVariantGenerator: every grid point, `samples` times
        num_samples = options.samples or 1
    else:
        sampler = optuna.samplers.TPESampler(multivariate=True, seed=seed)
        storage_db = _optuna_storage(options, folder, storage, settings is not None)
        search_alg = _StudyOptunaSearch(sampler=sampler,
                                        study_name=options.name, storage=storage_db)
        num_samples = options.samples or 8
    scheduler = None
    if options.asha:
        epochs = int(base["train"]["epochs"])
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max(epochs, 1),
                                  grace_period=min(options.grace_period, epochs),
                                  reduction_factor=options.reduction_factor)
    tune_config = tune.TuneConfig(
        metric=options.metric, mode=options.mode, search_alg=search_alg, scheduler=scheduler,
        num_samples=num_samples, max_concurrent_trials=options.max_concurrent,
        # One worker process per slot, reused by the next trial: saves torch's ~5 s import per trial.
        reuse_actors=True,
        trial_name_creator=lambda t: f"trial_{t.trial_id}", trial_dirname_creator=lambda t: f"trial_{t.trial_id}")
    verbose = options.verbose
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 0
    run_config = tune.RunConfig(
        name=options.name, storage_path=storage, verbose=verbose,
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=options.keep_checkpoints),
        callbacks=[_MLflowCallback(key, base, space.keys, options.metric, settings)])
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
