"""A tracking server that cannot be used stops `mssd tune` before any trial, with one clear line each."""

from __future__ import annotations

import urllib.error

import pytest
from sweep import Sweep, study_name, wait_for
from topology import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def sweep(client_env, ray, shared_storage, tmp_path, tmp_path_factory):
    return Sweep(study_name("errors"), tmp_path, shared_storage, tmp_path_factory.getbasetemp() / "smoke-data",
                 dict(client_env), ray.address, samples=1, epochs=1)


def assert_refused_before_any_trial(sweep: Sweep, *fragments: str) -> str:
    done = sweep.run(timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert len(lines) == 1, "expected exactly one line on stderr, got:\n" + done.stderr
    assert lines[0].startswith("mssd: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not list(sweep.storage.glob("*/trial_*")), "a trial started"
    for secret in (sweep.env.get("MLFLOW_TRACKING_PASSWORD"), sweep.env.get("RAY_AUTH_TOKEN")):
        assert secret and secret not in done.stdout + done.stderr
    return lines[0]


def test_unreachable_tracking_server(sweep):
    sweep.env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"
    assert_refused_before_any_trial(sweep, "unreachable", sweep.env["MLFLOW_TRACKING_URI"])


def test_wrong_password(sweep):
    sweep.env["MLFLOW_TRACKING_PASSWORD"] = "not-the-admin-password"
    assert_refused_before_any_trial(sweep, "refused access", "401")


def test_missing_credentials(sweep):
    del sweep.env["MLFLOW_TRACKING_USERNAME"], sweep.env["MLFLOW_TRACKING_PASSWORD"]
    done = sweep.run(timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "refused access (HTTP 401, no credentials were sent)" in done.stderr


def test_postgresql_down_behind_the_tracking_server(sweep, postgres, mlflow):
    postgres.stop()
    try:
        assert_refused_before_any_trial(sweep, "failing", "database")
    finally:
        postgres.start()
    # The server reconnects once its database is back: later tests (and users) need no restart.
    def serves() -> bool:
        try:
            return mlflow._serves_api()
        except (urllib.error.URLError, OSError):
            return False

    wait_for(serves, timeout=90, what="the MLflow server to serve again after PostgreSQL came back")
