"""docker-compose.yml as a reviewer reads it: the services, loopback-only ports, secrets only from .env,
healthchecks gating start order, named volumes, GPU reservations; then `docker compose config` itself."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SERVICES = {"postgres", "minio", "minio-init", "mlflow", "ray-head", "ray-worker"}
LONG_RUNNING = SERVICES - {"minio-init"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|_KEY\b|_USER\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_every_service_of_the_topology_is_defined(compose):
    assert set(compose["services"]) == SERVICES


def test_published_ports_bind_loopback_only(compose):
    published = [(name, port) for name, svc in compose["services"].items() for port in svc.get("ports", [])]
    assert published, "expected the MLflow UI and the Ray ports to be published"
    for name, port in published:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port!r} is not loopback-only"


def test_secrets_come_from_env_file_only(compose):
    for name, svc in compose["services"].items():
        for key, value in environment(svc).items():
            if SECRET_NAME.search(key) or re.search(r"://[^/\s:]+:[^@\s]+@", value):
                assert "${" in value, f"{name}.environment.{key} holds a literal value {value!r}, not ${{...}}"
    text = (REPO / "docker-compose.yml").read_text()
    assert "change-me" not in text


def test_required_secrets_have_no_default(compose):
    # `${VAR:?message}`: compose refuses to start without the secret instead of using a weak default.
    text = (REPO / "docker-compose.yml").read_text()
    for var in ("POSTGRES_PASSWORD", "OPTUNA_DB_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_S3_SECRET_KEY",
                "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SECRET_KEY", "RAY_AUTH_TOKEN"):
        assert re.search(r"\$\{" + var + r":\?", text), f"{var} must be required (${{{var}:?...}})"
        assert not re.search(r"\$\{" + var + r":-", text), f"{var} must not have a default"


def test_env_example_holds_placeholders_only():
    entries = dict(
        line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    secrets = {k: v for k, v in entries.items() if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|ROOT_USER", k)}
    assert len(secrets) >= 8
    for key, value in secrets.items():
        assert value.startswith("change-me-"), f".env.example: {key} must be a change-me placeholder"


def test_dot_env_is_kept_out_of_git_and_image():
    assert ".env" in (REPO / ".dockerignore").read_text().split()
    done = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, timeout=30)
    assert done.returncode == 0, ".env is not git-ignored: add `.env` to .gitignore"


def test_long_running_services_have_healthchecks(compose):
    for name in LONG_RUNNING:
        assert compose["services"][name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


@pytest.mark.parametrize(("service", "needs", "condition"), [
    ("minio-init", "minio", "service_healthy"),
    ("mlflow", "postgres", "service_healthy"),
    ("mlflow", "minio-init", "service_completed_successfully"),
    ("ray-head", "mlflow", "service_healthy"),
    ("ray-worker", "ray-head", "service_healthy"),
])
def test_start_order_waits_for_health(compose, service, needs, condition):
    assert compose["services"][service]["depends_on"][needs]["condition"] == condition


def test_state_lives_in_named_volumes(compose):
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source!r} is not declared at the top level"
    assert {"pgdata", "minio-data", "shared"} <= declared


def test_ray_workers_reserve_gpus_and_can_scale(compose):
    worker = compose["services"]["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    # `--scale ray-worker=N` needs no fixed container name and no host port of its own.
    assert "container_name" not in worker and not worker.get("ports")


def test_mlflow_server_is_configured_as_the_issue_asks(compose):
    env = environment(compose["services"]["mlflow"])
    assert env["MLFLOW_DB_URI"].startswith("postgresql+psycopg2://")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    script = (REPO / "docker" / "mlflow" / "start-mlflow.sh").read_text()
    for flag in ("--app-name basic-auth", "--serve-artifacts", "--allowed-hosts", "--artifacts-destination",
                 "--backend-store-uri"):
        assert flag in script


def test_mlflow_is_pinned_to_a_release_with_the_security_fixes():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    server = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["server"]]
    mlflow = next(r for r in server if r.name == "mlflow")
    assert "auth" in mlflow.extras
    assert not mlflow.specifier.contains(Version("3.16.0")) and mlflow.specifier.contains(Version("3.16.1"))


def compose_cli() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose`; `config` is client-side, no engine needed."""
    candidates = [["docker", "compose"], ["docker-compose"]]
    for cli in candidates:
        if shutil.which(cli[0]) is None:
            continue
        try:
            done = subprocess.run([*cli, "version"], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            continue
        if done.returncode == 0:
            return cli
    return None


@pytest.fixture(scope="module")
def cli():
    found = compose_cli()
    if found is None:
        pytest.skip("no compose CLI here (neither the `docker compose` plugin nor `docker-compose`); "
                    "the file checks above still ran")
    return found


def test_docker_compose_config_accepts_the_file_with_env_example(cli):
    done = subprocess.run([*cli, "-f", "docker-compose.yml", "--env-file", ".env.example", "config"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    assert set(rendered["services"]) == SERVICES


def test_docker_compose_config_refuses_to_run_without_secrets(cli, tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = subprocess.run([*cli, "-f", str(REPO / "docker-compose.yml"), "--env-file", str(empty), "config"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode != 0
    assert "in .env" in done.stderr
