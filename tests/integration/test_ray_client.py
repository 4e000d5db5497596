"""`mssd tune --address ray://HOST:PORT` (Ray Client): Tune's driver runs on the head node, so the MLflow
callback builds its tracker there from picklable settings; checked against a real `ray start --head` with
its Ray Client server, the basic-auth MLflow server (credentials reach the head only through the job's
runtime_env: the head itself is started without any MLFLOW_* variable), and MLflow's REST API."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field

import pytest
from sweep import MlflowRest, Sweep, split_runs, study_name, tags
from topology import RayCluster, free_port, port_open, scratch_dir, wait_until

pytestmark = pytest.mark.integration

EPOCHS = 2
SAMPLES = 2


@dataclass
class ClientHead(RayCluster):
    """A single Ray head (two CPUs, token auth) whose Ray Client server listens on a free port."""

    cpus_per_node: int = 2
    # Not the session cluster's 127.0.0.x: two heads on one address collide (their Ray Client servers
    # start per-client servers on the same port range), also across test runs that overlap.
    head_ip: str = field(default_factory=lambda: f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}")
    client_port: int = field(default_factory=free_port)

    def client_env(self) -> dict[str, str]:
        # The head's Ray Client server gives each client's server process 30 s to come up; on a loaded
        # two-core CI machine that is not always enough ("Initialization failure from server").
        return super().client_env() | {"RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "180"}

    @property
    def client_address(self) -> str:
        return f"ray://{self.head_ip}:{self.client_port}"

    def start(self, workers: int = 0) -> None:
        self.head = self._start_node("head", self.head_ip,
                                     ["--head", f"--port={self.port}", f"--ray-client-server-port={self.client_port}",
                                      f"--temp-dir={self.root / 't'}", "--include-dashboard=false"])
        self._wait_started(self.head)
        wait_until(lambda: port_open(self.client_port, self.head_ip), timeout=60,
                   what=f"the Ray Client server on {self.head_ip}:{self.client_port}")


@pytest.fixture(scope="module")
def client_head():
    head = ClientHead()
    try:
        head.start()
        yield head
    finally:
        head.cleanup()


def _env(*parts: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_", "MSSD_"))}
    for part in parts:
        env |= part
    return env


@pytest.fixture(scope="module")
def client_sweep(client_head, mlflow_server, postgres, tmp_path_factory):
    from topology import ensure_running

    ensure_running(postgres, mlflow_server)
    storage = scratch_dir("mssd-shared-")  # passed as file://: a mount the client and the head share
    sweep = Sweep(study_name("client"), tmp_path_factory.mktemp("client"), storage,
                  tmp_path_factory.getbasetemp() / "smoke-data",
                  _env(mlflow_server.client_env(), client_head.client_env()), client_head.client_address,
                  samples=SAMPLES, epochs=EPOCHS)
    done = sweep.run(timeout=300)
    assert done.returncode == 0, f"mssd tune failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    yield sweep, done, MlflowRest(mlflow_server)
    shutil.rmtree(storage, ignore_errors=True)


def test_a_sweep_through_ray_client_completes(client_sweep):
    sweep, done, _ = client_sweep
    assert f"{SAMPLES} completed" in done.stdout, done.stdout
    assert len(sweep.trial_results()) == SAMPLES
    assert (sweep.experiment_dir / "optuna.db").is_file(), "the Optuna study is not beside the trials"
    for secret in (sweep.env["MLFLOW_TRACKING_PASSWORD"], sweep.env["RAY_AUTH_TOKEN"]):
        assert secret not in done.stdout + done.stderr


def test_mlflow_holds_the_parent_and_one_child_per_trial_with_every_epoch(client_sweep):
    sweep, _, rest = client_sweep
    parents, children = split_runs(rest.runs(sweep.name))
    assert len(parents) == 1 and len(children) == SAMPLES
    parent_id = parents[0]["info"]["run_id"]
    assert parents[0]["info"]["status"] == "FINISHED"
    assert {tags(c)["mlflow.parentRunId"] for c in children} == {parent_id}
    assert {tags(c)["mssd.trial_id"] for c in children} == set(sweep.trial_results())
    for child in children:
        assert tags(child)["mssd.status"] == "completed" and child["info"]["status"] == "FINISHED"
        for key in ("map", "loss/total"):
            steps = [step for step, _ in rest.history(child["info"]["run_id"], key)]
            assert steps == list(range(1, EPOCHS + 1)), f"{key}: steps {steps}"
        files = {f["path"] for f in rest.artifacts(child["info"]["run_id"], "checkpoints")}
        assert "checkpoints/best.pt" in files


def _refused(sweep: Sweep) -> str:
    done = sweep.run(timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert lines[0].startswith("mssd: error: --address ray://")
    assert not list(sweep.storage.glob("*/trial_*")), "a trial started"
    return lines[0]


def test_the_embedded_sqlite_store_is_refused_in_one_line(client_head, tmp_path, tmp_path_factory):
    sweep = Sweep(study_name("client-sqlite"), tmp_path, tmp_path / "storage",
                  tmp_path_factory.getbasetemp() / "smoke-data", _env(client_head.client_env()),
                  client_head.client_address, samples=1, epochs=1)
    line = _refused(sweep)
    assert "SQLite" in line and "http(s)://" in line


def test_storage_local_to_the_client_is_refused_in_one_line(client_head, mlflow, tmp_path, tmp_path_factory):
    sweep = Sweep(study_name("client-local"), tmp_path, tmp_path / "storage",
                  tmp_path_factory.getbasetemp() / "smoke-data", _env(mlflow.client_env(), client_head.client_env()),
                  client_head.client_address, samples=1, epochs=1)
    argv = sweep.argv
    sweep.argv = lambda **kw: [a for a in argv(**kw) if a not in ("--storage", sweep.storage.as_uri())]
    line = _refused(sweep)
    assert "--storage s3://" in line


def test_resuming_through_ray_client_adds_no_trial_and_no_run(client_sweep):
    sweep, _, rest = client_sweep
    done = sweep.run(resume=True, timeout=240)
    assert done.returncode == 0, f"--resume failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert len(sweep.trial_results()) == SAMPLES
    parents, children = split_runs(rest.runs(sweep.name))
    assert len(parents) == 1 and len(children) == SAMPLES
    assert parents[0]["info"]["status"] == "FINISHED"
