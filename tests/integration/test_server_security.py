"""The MLflow server as deployed: basic auth on tracking and artifact APIs, and a Host-header allow-list."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.integration

SEARCH = ("POST", "/api/2.0/mlflow/experiments/search", json.dumps({"max_results": 5}).encode())
ARTIFACT_CALLS = [
    ("GET", "/api/2.0/mlflow-artifacts/artifacts", None),                       # list
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/0/some/file.txt", None),       # download
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/some/file.txt", b"payload"),  # upload
]


def call(server, method, path, body=None, *, creds=None, host=None) -> int:
    request = urllib.request.Request(server.url + path, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if creds is not None:
        token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def admin(server):
    return (server.admin_user, server.admin_password)


def test_admin_credentials_reach_the_tracking_api(mlflow):
    assert call(mlflow, *SEARCH, creds=admin(mlflow)) == 200


def test_anonymous_tracking_request_gets_401(mlflow):
    assert call(mlflow, *SEARCH) == 401


def test_wrong_password_gets_401(mlflow):
    assert call(mlflow, *SEARCH, creds=(mlflow.admin_user, "not-the-password")) == 401


@pytest.mark.parametrize(("method", "path", "body"), ARTIFACT_CALLS, ids=["list", "download", "upload"])
def test_anonymous_artifact_request_gets_401(mlflow, method, path, body):
    assert call(mlflow, method, path, body) == 401


def test_admin_can_list_proxied_artifacts(mlflow):
    assert call(mlflow, *ARTIFACT_CALLS[0], creds=admin(mlflow)) == 200


@pytest.mark.parametrize("host", ["evil.example.com", "mlflow.attacker.test:5000", "10.1.2.3.nip.io"])
def test_foreign_host_header_is_refused_even_with_credentials(mlflow, host):
    # DNS rebinding: a page on a foreign name resolving to us must not reach the API.
    assert call(mlflow, *SEARCH, creds=admin(mlflow), host=host) == 403


def test_allowed_host_header_is_served(mlflow):
    assert call(mlflow, *SEARCH, creds=admin(mlflow), host=f"localhost:{mlflow.port}") == 200
