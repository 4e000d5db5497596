"""Fixtures of the real-services tests: PostgreSQL, ``mlflow server`` (basic auth) and a two-node Ray cluster.

Started once per session on loopback by ``topology.py``, stopped by finalizers. The only skip is the one
the brief allows: no PostgreSQL binaries and no way to install them here (``make test-deps`` installs them).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from topology import (  # noqa: E402
    MlflowServer,
    PostgresServer,
    RayCluster,
    ensure_running,
    find_postgres_bin,
    install_postgres,
    scratch_dir,
)


def _require_python_packages() -> None:
    missing = [name for name, module in (("psycopg2-binary", "psycopg2"), ("mlflow[auth]", "flask_wtf"))
               if importlib.util.find_spec(module) is None]
    if missing:
        pytest.fail(f"tests/integration needs {', '.join(missing)}: pip install -e '.[server]' (make install)",
                    pytrace=False)


@pytest.fixture(scope="session")
def postgres():
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        reason = install_postgres()
        if reason is not None:
            pytest.skip(reason)
        bin_dir = find_postgres_bin()
    _require_python_packages()
    server = PostgresServer(bin_dir)
    try:
        server.init()
        server.start()
        for name in ("mlflow", "mlflow_auth", "optuna"):
            server.create_database(name)
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def mlflow_server(postgres):
    """The team's MLflow server: PostgreSQL stores, proxied local artifacts, basic auth, Host allow-list."""
    server = MlflowServer(postgres.uri("mlflow"), scratch_dir("mssd-artifacts-"), auth=True,
                          auth_db_uri=postgres.uri("mlflow_auth"))
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(server.artifacts_dir, ignore_errors=True)


@pytest.fixture
def mlflow(mlflow_server, postgres):
    """The session server, running: restarted first when an earlier (fault) test left it or its DB down."""
    ensure_running(postgres, mlflow_server)
    return mlflow_server


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray head (127.0.0.2) plus one worker node (127.0.0.3), one CPU each, token auth on."""
    cluster = RayCluster()
    try:
        cluster.start(workers=1)
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def ray(ray_cluster):
    """The session cluster with its head and exactly one worker (a fault test may have killed one)."""
    if not ray_cluster.workers:
        ray_cluster.add_worker()
    return ray_cluster


@pytest.fixture
def shared_storage():
    """A storage path every node sees (one host here; an NFS mount or s3:// on a real cluster)."""
    path = scratch_dir("mssd-shared-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def client_env(mlflow, ray):
    """The environment of a user's shell that launches `mssd tune` against the topology."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_", "MSSD_"))}
    return env | mlflow.client_env() | ray.client_env()
