"""Which MLflow store, and can we use it: the tracking URI rule, reachability checks, the client.

One rule for every command (``resolve_tracking_uri``): the config's ``tracking.uri`` when set, else
``$MLFLOW_TRACKING_URI``, else the store a study recorded (``mssd export|report|ui|tune --resume`` of
an existing study), else the embedded store ``sqlite:///<workdir>/mlflow.db`` (artifacts under
``<workdir>/mlartifacts``). A server with basic auth takes MLflow's own ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` variables; nothing here handles secrets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from detectors.errors import MSSDError


class TrackingError(MSSDError):
    """The tracking store cannot be used (unreachable, refuses credentials, backend down)."""


def default_tracking_uri(workdir: str | Path) -> str:
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cfg_uri: str | None, workdir: str | Path, recorded: str | None = None) -> str:
    """Config ``tracking.uri`` > ``$MLFLOW_TRACKING_URI`` > the study's ``recorded`` store > the embedded one."""
    return cfg_uri or os.environ.get("MLFLOW_TRACKING_URI") or recorded or default_tracking_uri(workdir)


def redact_uri(uri: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(//[^:/@]+:)[^@/]*@", r"\1***@", uri)


def first_line(text: Any, limit: int = 200) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[0] if lines else type(text).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def is_http_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


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
    return f"MLflow tracking server {redact_uri(uri)} failed: {first_line(text)}"


def _host_creds(uri: str) -> Any:
    """What MLflow's REST client sends to ``uri``: its own credential variables (or ~/.mlflow/credentials)."""
    from mlflow.environment_variables import MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_TOKEN
    from mlflow.utils.credentials import read_mlflow_creds
    from mlflow.utils.rest_utils import MlflowHostCreds

    creds = read_mlflow_creds()
    return MlflowHostCreds(host=uri, username=creds.username, password=creds.password,
                           token=MLFLOW_TRACKING_TOKEN.get(), ignore_tls_verification=MLFLOW_TRACKING_INSECURE_TLS.get())


def _request_with_patience(creds: Any, timeout: float, wait: float,
                           refused_wait: float) -> tuple[Any, BaseException | None, float]:
    """GET experiments/search until it answers at all (any HTTP status): a server that was just started
    can refuse connections (not listening yet) or stall (basic auth loads its user store first).

    A port that only ever refuses connections is given ``refused_wait`` seconds: nothing listens there,
    and a user without a server should hear so in seconds, not half a minute. Once anything else is seen
    (a stall, a timeout), the server is there but slow, and it gets ``wait`` seconds in all.
    Returns ``(response, None, waited)`` or ``(None, last_error, waited)``."""
    from mlflow.utils.rest_utils import http_request

    started = time.monotonic()
    delay = 0.5
    only_refused = True
    while True:
        left = wait - (time.monotonic() - started)
        try:
            response = http_request(creds, "/api/2.0/mlflow/experiments/search", "GET",
                                    params={"max_results": 1}, max_retries=0,
                                    timeout=max(1.0, min(timeout, left)) if wait > 0 else timeout,
                                    retry_codes=frozenset(), raise_on_status=False)
            return response, None, time.monotonic() - started
        except Exception as exc:  # requests/urllib3 errors arrive wrapped in MlflowException
            text = str(exc)
            only_refused = only_refused and "refused" in text
            waited = time.monotonic() - started
            left = (min(wait, refused_wait) if only_refused else wait) - waited
            if not _UNREACHABLE.search(text) or left <= 0:
                return None, exc, waited
            time.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)


def check_tracking(uri: str, timeout: float = 10.0, wait: float = 30.0, refused_wait: float = 5.0) -> str:
    """Reach the store; return a one-line description or raise TrackingError.

    A server that does not answer is retried with back-off for up to ``wait`` seconds in all (each
    request at most ``timeout`` s); a port that refuses every connection (nothing listening) only for
    ``refused_wait`` s; any HTTP answer is final at once.
    Distinguishes: server unreachable, credentials refused (HTTP 401/403), server up but its backend
    (e.g. PostgreSQL) down (HTTP 5xx), and direct database URIs that cannot be opened.
    """
    if is_http_uri(uri):
        creds = _host_creds(uri)
        response, error, waited = _request_with_patience(creds, timeout, wait, refused_wait)
        if response is None:
            raise TrackingError(_explain_http_failure(uri, error, waited))
        code = response.status_code
        if code in (401, 403):
            who = "no credentials were sent" if creds.username is None else f"user {creds.username!r}"
            raise TrackingError(f"MLflow tracking server {redact_uri(uri)} refused access (HTTP {code}, {who}); "
                                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        if code >= 500:
            raise TrackingError(f"MLflow tracking server {redact_uri(uri)} is up but failing (HTTP {code}): "
                                f"{first_line(_server_message(response))} (is its database running?)")
        if code >= 400:
            raise TrackingError(f"MLflow tracking server {redact_uri(uri)} answered HTTP {code}: "
                                f"{first_line(_server_message(response))}")
        return f"MLflow tracking: {redact_uri(uri)} (server reachable)"
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"MLflow store {uri}: cannot create {db.parent} ({exc.strerror})") from None
    try:
        with _quiet_alembic():
            client(uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(f"MLflow store {redact_uri(uri)} cannot be opened: {first_line(exc)}") from None
    return f"MLflow tracking: {redact_uri(uri)}"


def store_has_run(uri: str, run_id: str, wait: float = 5.0) -> bool:
    """Whether the store at ``uri`` answers (within ``wait`` s) and holds run ``run_id``: tells that a URI
    names the same store as another one (a server seen under another host name), without writing."""
    try:
        check_tracking(uri, wait=wait)
        client(uri).get_run(run_id)
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


def client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri`` (a new SQLite store is created quietly)."""
    from mlflow.tracking import MlflowClient

    # The writer thread retries failed writes itself, in order; MLflow's own retries (7, with
    # exponential back-off up to minutes) would only delay noticing that a restarted server is back.
    # A user's explicit setting wins.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

    with _quiet_alembic():
        return MlflowClient(uri)


def ensure_experiment(mlflow_client: Any, uri: str, name: str, artifact_root: Path | None,
                      tags: dict[str, str] | None = None) -> str:
    """The id of experiment ``name``, created (or restored from deleted) when needed, with ``tags`` set
    (also on an existing experiment: one made before a tag existed gets it)."""
    experiment_id = _ensure_experiment(mlflow_client, uri, name, artifact_root)
    for key, value in (tags or {}).items():
        mlflow_client.set_experiment_tag(experiment_id, key, value)
    return experiment_id


def _ensure_experiment(mlflow_client: Any, uri: str, name: str, artifact_root: Path | None) -> str:
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    # A local store keeps artifacts beside the database, not in ./mlruns of whatever the cwd is.
    location = (artifact_root / name).resolve().as_uri() if artifact_root and not is_http_uri(uri) else None
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another process
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def search_all(mlflow_client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = mlflow_client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def ui_command(uri: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """``mlflow ui`` for a store, bound to loopback by default."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
