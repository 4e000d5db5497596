"""MLflow, the system of record: the only module that imports ``mlflow``.

Where runs go (``resolve_tracking_uri``): ``tracking.uri`` from the config when set, else
``$MLFLOW_TRACKING_URI``, else the embedded store ``sqlite:///<workdir>/mlflow.db`` (artifacts under
``<workdir>/mlartifacts``). A server with basic auth takes MLflow's own ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` variables; nothing here handles secrets.

Layout of a study in MLflow: one experiment named after the study; one parent run (tags ``mssd.study``,
``mssd.role=parent``, package versions, git commit; artifacts ``study/base-config.yaml`` and
``study/search-space.yaml``); one child run per Tune trial (tags ``mlflow.parentRunId``,
``mssd.trial_id``, ``mssd.status`` in running|completed|early_stopped|nonfinite|error (and ``lost``
for a soft-deleted run of a trial a killed driver started but Tune never recorded); params = the
trial's flattened config; metrics at ``step = epoch``, each epoch exactly once; artifact
``checkpoints/best.pt``).

Every write goes through one background writer thread (``_Writer``): a single writer keeps SQLite free
of "database is locked", and a server that goes away mid-sweep only delays writes: operations queue up
and are retried in order, with timestamps fixed at submission so a retried write is idempotent.
Epochs already present in MLflow (the ``epoch`` metric's history) are skipped, so retries, restores and
back-fills never log an epoch twice.

Public API (also for ``mssd ablate``):
- ``resolve_tracking_uri(cfg_uri, workdir) -> str``, ``check_tracking(uri) -> str`` (one-line
  ``TrackingError`` when the store is unreachable or refuses us; an unreachable server is retried with
  back-off for up to 30 s), ``redact_uri(uri)``, ``is_http_uri(uri)``, ``store_has_run(uri, run_id)``.
- ``StudyTracker``: ``start()``, ``trial_started``, ``trial_epoch``, ``trial_finished``,
  ``retire_trials``, ``study_finished``, ``flush``; used by the driver-side Tune callback in ``study.ray_backend``.
- ``RunLogger``: a ``detectors.engine.trainer.fit`` callback for single runs (``mssd train``).
- Queries: ``study_trials``, ``metric_history``, ``log_parent_artifacts``.
- ``ui_command(uri, port)``: the ``mlflow ui`` command line for a store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.errors import MSSDError

log = logging.getLogger(__name__)

TRIAL_STATUSES = ("running", "completed", "early_stopped", "nonfinite", "error")
_RUN_STATUS = {"running": "RUNNING", "completed": "FINISHED", "early_stopped": "FINISHED",
               "nonfinite": "FAILED", "error": "FAILED"}
# MLflow error codes that no retry can fix: drop the write with a warning instead of blocking the queue.
_PERMANENT_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
                    "BAD_REQUEST", "INVALID_STATE", "MALFORMED_REQUEST"}


class TrackingError(MSSDError):
    """The tracking store cannot be used (unreachable, refuses credentials, backend down)."""


# ---------------------------------------------------------------------------------------------
# where, and can we reach it


def default_tracking_uri(workdir: str | Path) -> str:
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cfg_uri: str | None, workdir: str | Path) -> str:
    """Config ``tracking.uri`` > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///<workdir>/mlflow.db``."""
    return cfg_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workdir)


def redact_uri(uri: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(//[^:/@]+:)[^@/]*@", r"\1***@", uri)


def _first_line(text: Any, limit: int = 200) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[0] if lines else type(text).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


is_http_uri = _is_http

_UNREACHABLE = re.compile(r"Connection refused|Failed to establish|NameResolution|Name or service not known|"
                          r"No route to host|timed out|Max retries exceeded|RemoteDisconnected|Connection reset")


def _explain_http_failure(uri: str, exc: BaseException, waited: float = 0.0) -> str:
    text = str(exc)
    if _UNREACHABLE.search(text):
        reason = "connection refused" if "refused" in text else "no answer"
        if waited >= 1:
            reason += f" for {waited:.0f} s"
        return (f"MLflow tracking server {redact_uri(uri)} is unreachable ({reason}); start it or point "
                "MLFLOW_TRACKING_URI / tracking.uri at a running one")
    return f"MLflow tracking server {redact_uri(uri)} failed: {_first_line(text)}"


def _request_with_patience(creds: Any, timeout: float, wait: float) -> tuple[Any, BaseException | None, float]:
    """GET experiments/search until it answers at all (any HTTP status), for at most ``wait`` seconds:
    a server that was just started (basic auth loads its user store first) can refuse connections or
    stall for a while. Returns ``(response, None, waited)`` or ``(None, last_error, waited)``."""
    from mlflow.utils.rest_utils import http_request

    started = time.monotonic()
    delay = 0.5
    while True:
        left = wait - (time.monotonic() - started)
        try:
            response = http_request(creds, "/api/2.0/mlflow/experiments/search", "GET",
                                    params={"max_results": 1}, max_retries=0,
                                    timeout=max(1.0, min(timeout, left)) if wait > 0 else timeout,
                                    retry_codes=frozenset(), raise_on_status=False)
            return response, None, time.monotonic() - started
        except Exception as exc:  # requests/urllib3 errors arrive wrapped in MlflowException
            waited = time.monotonic() - started
            left = wait - waited
            if not _UNREACHABLE.search(str(exc)) or left <= 0:
                return None, exc, waited
            time.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)


def check_tracking(uri: str, timeout: float = 10.0, wait: float = 30.0) -> str:
    """Reach the store; return a one-line description or raise TrackingError.

    A server that refuses connections or does not answer is retried with back-off for up to ``wait``
    seconds in all (each request at most ``timeout`` s); any HTTP answer is final at once.
    Distinguishes: server unreachable, credentials refused (HTTP 401/403), server up but its backend
    (e.g. PostgreSQL) down (HTTP 5xx), and direct database URIs that cannot be opened.
    """
    if _is_http(uri):
        from mlflow.tracking._tracking_service.utils import _get_store

        creds = _get_store(uri).get_host_creds()
        response, error, waited = _request_with_patience(creds, timeout, wait)
        if response is None:
            raise TrackingError(_explain_http_failure(uri, error, waited))
        code = response.status_code
        if code in (401, 403):
            who = "no credentials were sent" if creds.username is None else f"user {creds.username!r}"
            raise TrackingError(f"MLflow tracking server {redact_uri(uri)} refused access (HTTP {code}, {who}); "
                                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        if code >= 500:
            raise TrackingError(f"MLflow tracking server {redact_uri(uri)} is up but failing (HTTP {code}): "
                                f"{_first_line(_server_message(response))} (is its database running?)")
        if code >= 400:
            raise TrackingError(f"MLflow tracking server {redact_uri(uri)} answered HTTP {code}: "
                                f"{_first_line(_server_message(response))}")
        return f"MLflow tracking: {redact_uri(uri)} (server reachable)"
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"MLflow store {uri}: cannot create {db.parent} ({exc.strerror})") from None
    try:
        from mlflow.tracking import MlflowClient

        with _quiet_alembic():
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(f"MLflow store {redact_uri(uri)} cannot be opened: {_first_line(exc)}") from None
    return f"MLflow tracking: {redact_uri(uri)}"


def store_has_run(uri: str, run_id: str, wait: float = 5.0) -> bool:
    """Whether the store at ``uri`` answers (within ``wait`` s) and holds run ``run_id``: tells that a URI
    names the same store as another one (a server seen under another host name), without writing."""
    try:
        check_tracking(uri, wait=wait)
        _client(uri).get_run(run_id)
    except Exception:
        return False
    return True


def _server_message(response: Any) -> str:
    try:
        body = response.json()
        return str(body.get("message") or body)
    except ValueError:
        return response.text or response.reason


@contextlib.contextmanager
def _quiet_alembic():
    """MLflow migrates a new SQLite store with alembic, which logs a screenful at INFO."""
    loggers = [logging.getLogger(name) for name in ("alembic", "mlflow.store.db.utils")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    # The writer thread retries failed writes itself, in order; MLflow's own retries (7, with
    # exponential back-off up to minutes) would only delay noticing that a restarted server is back.
    # A user's explicit setting wins.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

    with _quiet_alembic():
        return MlflowClient(uri)


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("mssd-study", "torch", "ray", "optuna", "mlflow", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# ---------------------------------------------------------------------------------------------
# the single writer


def _is_permanent(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) in _PERMANENT_CODES


class _Writer:
    """Runs MLflow writes one at a time on a daemon thread, retrying transient failures in order."""

    def __init__(self, name: str = "mlflow-writer") -> None:
        self._queue: queue.Queue[tuple[Callable[[], None], str] | None] = queue.Queue()
        self._unfinished = 0
        self._lock = threading.Condition()
        self._outage_since: float | None = None
        self.dropped: list[str] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[], None], what: str) -> None:
        with self._lock:
            self._unfinished += 1
        self._queue.put((op, what))

    @property
    def pending(self) -> int:
        with self._lock:
            return self._unfinished

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every submitted write is done (or ``timeout`` s); return how many remain."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._unfinished:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._lock.wait(timeout=left if left is not None else 1.0)
            return self._unfinished

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            op, what = item
            delay = 0.5
            while True:
                try:
                    op()
                except Exception as exc:
                    if _is_permanent(exc):
                        self.dropped.append(f"{what}: {_first_line(exc)}")
                        log.warning("MLflow rejected %s: %s", what, _first_line(exc))
                        break
                    if self._outage_since is None:
                        self._outage_since = time.monotonic()
                        print(f"mssd: MLflow write failed ({_first_line(exc, 120)}); buffering and retrying",
                              file=sys.stderr, flush=True)
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                if self._outage_since is not None:
                    print(f"mssd: MLflow reachable again after {time.monotonic() - self._outage_since:.0f} s; "
                          "back-filling buffered writes", file=sys.stderr, flush=True)
                    self._outage_since = None
                break
            with self._lock:
                self._unfinished -= 1
                self._lock.notify_all()


def _finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = float(value)  # NaN is kept (e.g. aps with no small objects): MLflow stores it as NaN
    return out


def _log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, _param_text(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow's per-request limit
        client.log_batch(run_id, params=items[i: i + 100])


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]


def _log_epoch(client: Any, run_id: str, epoch: int, metrics: dict[str, float], timestamp_ms: int) -> None:
    """One epoch's metrics in one batch (one transaction on the server), ``epoch`` itself included."""
    from mlflow.entities import Metric

    points = [Metric(k, v, timestamp_ms, epoch) for k, v in metrics.items() if k != "epoch"]
    points.append(Metric("epoch", float(epoch), timestamp_ms, epoch))
    client.log_batch(run_id, metrics=points)


def _logged_epochs(client: Any, run_id: str) -> set[int]:
    return {int(m.step) for m in client.get_metric_history(run_id, "epoch")}


# ---------------------------------------------------------------------------------------------
# studies


@dataclass
class _TrialState:
    run_id: str | None = None
    epochs: set[int] = field(default_factory=set)


class StudyTracker:
    """A study's parent run and one child run per trial; all writes on one background thread.

    ``start()`` runs synchronously (before any trial) and fails with one line when the store cannot be
    used. The other methods only enqueue, so a slow or absent server never stalls the sweep.
    """

    def __init__(self, uri: str, study: str, *, staging_dir: str | Path, artifact_root: str | Path | None = None,
                 tags: dict[str, str] | None = None, artifacts: dict[str, str] | None = None) -> None:
        self.uri = uri
        self.study = study
        self.staging_dir = Path(staging_dir)
        self.artifact_root = Path(artifact_root) if artifact_root else None
        self.tags = dict(tags or {})
        self.artifacts = dict(artifacts or {})  # artifact file name -> text
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self._trials: dict[str, _TrialState] = {}
        self._writer: _Writer | None = None
        self._client: Any = None

    # -- synchronous set-up
    def start(self) -> None:
        check_tracking(self.uri)
        self._client = _client(self.uri)
        self.experiment_id = _ensure_experiment(self._client, self.uri, self.study, self.artifact_root)
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
                self._trials[trial_id] = _TrialState(run.info.run_id, _logged_epochs(self._client, run.info.run_id))
        self.initial_trials = set(self._trials)
        self._writer = _Writer()

    def _child_runs(self) -> list[Any]:
        return _search_all(self._client, self.experiment_id, f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'")

    @property
    def known_trials(self) -> set[str]:
        return set(self._trials)

    # -- asynchronous writes
    def trial_started(self, trial_id: str, name: str, params: dict[str, Any], searched: Iterable[str]) -> None:
        state = self._trials.setdefault(trial_id, _TrialState())
        searched = list(searched)
        start_ms = int(time.time() * 1000)

        def op() -> None:
            if state.run_id is None:
                tags = {"mlflow.parentRunId": self.parent_run_id, "mssd.study": self.study,
                        "mssd.trial_id": trial_id, "mssd.role": "trial", "mssd.status": "running",
                        "mssd.searched": ",".join(searched)}
                run = self._client.create_run(self.experiment_id, start_time=start_ms, tags=tags, run_name=name)
                state.run_id = run.info.run_id
                _log_params(self._client, state.run_id, params)
            else:  # restored or retried: the run exists, its params are logged
                self._client.set_tag(state.run_id, "mssd.status", "running")
                self._client.update_run(state.run_id, status="RUNNING")

        self._writer.submit(op, f"trial {trial_id} start")

    def trial_epoch(self, trial_id: str, epoch: int, metrics: dict[str, Any], timestamp: float | None = None) -> None:
        state = self._trials.setdefault(trial_id, _TrialState())
        values = _finite_metrics(metrics)
        ts = int((timestamp or time.time()) * 1000)

        def op() -> None:
            if state.run_id is None or epoch in state.epochs:
                return
            _log_epoch(self._client, state.run_id, epoch, values, ts)
            state.epochs.add(epoch)

        self._writer.submit(op, f"trial {trial_id} epoch {epoch}")

    def trial_finished(self, trial_id: str, status: str, *, error: str | None = None,
                       best_checkpoint: Path | None = None) -> None:
        if status not in TRIAL_STATUSES:
            raise ValueError(f"unknown trial status {status!r}")
        state = self._trials.setdefault(trial_id, _TrialState())
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
                self._client.set_tag(state.run_id, "mssd.error", _first_line(error, 500))
            self._client.set_terminated(state.run_id, status=_RUN_STATUS[status], end_time=end_ms)

        self._writer.submit(op, f"trial {trial_id} end")

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

    def study_finished(self, status: str = "FINISHED", extra_tags: dict[str, str] | None = None) -> None:
        def op() -> None:
            for key, value in (extra_tags or {}).items():
                self._client.set_tag(self.parent_run_id, key, value)
            self._client.set_terminated(self.parent_run_id, status=status)

        self._writer.submit(op, "study end")

    def flush(self, timeout: float | None = None) -> int:
        return self._writer.flush(timeout) if self._writer else 0


def _ensure_experiment(client: Any, uri: str, name: str, artifact_root: Path | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    # A local store keeps artifacts beside the database, not in ./mlruns of whatever the cwd is.
    location = (artifact_root / name).resolve().as_uri() if artifact_root and not _is_http(uri) else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another process
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _search_all(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


# ---------------------------------------------------------------------------------------------
# single runs (mssd train)


class RunLogger:
    """A ``fit`` callback logging one training run: params, per-epoch metrics, best checkpoint, config.

    Writes go through the same background writer as studies. ``close(status, error)`` ends the run;
    ``mssd train`` calls it also when ``fit`` raises.
    """

    def __init__(self, uri: str, experiment: str, *, run_name: str, params: dict[str, Any],
                 artifact_root: str | Path | None = None, config_text: str = "", tags: dict[str, str] | None = None,
                 resume_run_id: str | None = None) -> None:
        check_tracking(uri)
        self._client = _client(uri)
        self._writer = _Writer()
        experiment_id = _ensure_experiment(self._client, uri, experiment,
                                           Path(artifact_root) if artifact_root else None)
        if resume_run_id:
            self.run_id = resume_run_id
            self._epochs = _logged_epochs(self._client, resume_run_id)
            self._client.update_run(resume_run_id, status="RUNNING")
        else:
            run = self._client.create_run(experiment_id, run_name=run_name,
                                          tags={"mssd.role": "train", **(tags or {})})
            self.run_id = run.info.run_id
            self._epochs = set()
            _log_params(self._client, self.run_id, params)
            if config_text:
                with tempfile.TemporaryDirectory() as tmp:
                    (Path(tmp) / "config.yaml").write_text(config_text)
                    self._client.log_artifact(self.run_id, str(Path(tmp) / "config.yaml"))
        self._best: Path | None = None

    def after_epoch(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        values, ts = _finite_metrics(metrics), int(time.time() * 1000)

        def op() -> None:
            if epoch not in self._epochs:
                _log_epoch(self._client, self.run_id, epoch, values, ts)
                self._epochs.add(epoch)

        self._writer.submit(op, f"epoch {epoch}")
        last = getattr(trainer, "last_checkpoint", None)
        if last is not None:
            self._best = Path(last).with_name("best.pt")

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        self._writer.submit(lambda: self._client.log_artifact(self.run_id, str(path), artifact_path),
                            f"artifact {path.name}")

    def close(self, status: str = "FINISHED", error: str | None = None, timeout: float | None = 600) -> int:
        if status == "FINISHED" and self._best is not None and self._best.is_file():
            self.log_file(self._best, "checkpoints")

        def op() -> None:
            if error:
                self._client.set_tag(self.run_id, "mssd.error", _first_line(error, 500))
            self._client.set_terminated(self.run_id, status=status)

        self._writer.submit(op, "run end")
        return self._writer.flush(timeout)


# ---------------------------------------------------------------------------------------------
# queries (export, report)


@dataclass
class TrialRecord:
    run_id: str
    trial_id: str
    name: str
    status: str  # mssd.status
    params: dict[str, str]
    metrics: dict[str, float]  # latest value of each metric
    searched: list[str]
    artifact_uri: str


def _experiment_id(client: Any, study: str) -> str:
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        raise TrackingError(f"no study {study!r} in MLflow store {redact_uri(client.tracking_uri)}")
    return experiment.experiment_id


def parent_run_id(uri: str, study: str) -> str:
    client = _client(uri)
    runs = client.search_runs([_experiment_id(client, study)],
                              f"tags.`mssd.role` = 'parent' and tags.`mssd.study` = '{study}'", max_results=1)
    if not runs:
        raise TrackingError(f"study {study!r} has no parent run in {redact_uri(uri)}")
    return runs[0].info.run_id


def study_trials(uri: str, study: str) -> list[TrialRecord]:
    """Every trial of a study (one record per child run), in creation order."""
    client = _client(uri)
    runs = _search_all(client, _experiment_id(client, study), "tags.`mssd.role` = 'trial'")
    records = []
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        tags = run.data.tags
        records.append(TrialRecord(
            run_id=run.info.run_id, trial_id=tags.get("mssd.trial_id", ""), name=run.info.run_name or "",
            status=tags.get("mssd.status", "running"), params=dict(run.data.params),
            metrics={k: float(v) for k, v in run.data.metrics.items()},
            searched=[k for k in tags.get("mssd.searched", "").split(",") if k],
            artifact_uri=run.info.artifact_uri))
    return records


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """``[(epoch, value), ...]`` sorted by epoch (one point per epoch)."""
    points = {int(m.step): float(m.value) for m in _client(uri).get_metric_history(run_id, key)}
    return sorted(points.items())


def download_artifact(uri: str, run_id: str, path: str, dst: str | Path) -> Path:
    return Path(_client(uri).download_artifacts(run_id, path, str(dst)))


def log_parent_artifacts(uri: str, study: str, paths: Iterable[str | Path], artifact_path: str) -> None:
    client = _client(uri)
    run_id = parent_run_id(uri, study)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def ui_command(uri: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """``mlflow ui`` for a store, bound to loopback by default."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
