"""A tiny sweep through `mssd tune --address <head>` on the two-node cluster, tracked by the MLflow server
(PostgreSQL, proxied artifacts, basic auth), then checked through MLflow's REST API."""

from __future__ import annotations

import os
import shutil

import pytest
from sweep import MlflowRest, Sweep, params, split_runs, study_name, tags
from topology import ensure_running, scratch_dir

pytestmark = pytest.mark.integration

EPOCHS = 2
SAMPLES = 2


@pytest.fixture(scope="module")
def finished_sweep(mlflow_server, ray_cluster, tmp_path_factory, postgres):
    ensure_running(postgres, mlflow_server)
    if not ray_cluster.workers:
        ray_cluster.add_worker()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_", "MSSD_"))}
    env |= mlflow_server.client_env() | ray_cluster.client_env()
    storage = scratch_dir("mssd-shared-")
    sweep = Sweep(study_name("sweep"), tmp_path_factory.mktemp("sweep"), storage,
                  tmp_path_factory.getbasetemp() / "smoke-data", env, ray_cluster.address,
                  samples=SAMPLES, epochs=EPOCHS)
    done = sweep.run(timeout=300)
    assert done.returncode == 0, f"mssd tune failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    yield sweep, done, MlflowRest(mlflow_server)
    shutil.rmtree(storage, ignore_errors=True)


def test_sweep_reports_every_trial_completed(finished_sweep):
    sweep, done, _ = finished_sweep
    assert f"{SAMPLES} completed" in done.stdout, done.stdout


def test_trials_ran_on_both_nodes(finished_sweep):
    sweep, _, _ = finished_sweep
    nodes = {lines[-1]["node_ip"] for lines in sweep.trial_results().values()}
    # The head and the worker of the moment (a fault test may have replaced the first worker).
    assert len(nodes) == 2 and "127.0.0.2" in nodes, nodes


def test_mlflow_holds_one_parent_and_one_child_per_trial(finished_sweep):
    sweep, _, rest = finished_sweep
    parents, children = split_runs(rest.runs(sweep.name))
    assert len(parents) == 1 and len(children) == SAMPLES
    assert {tags(c)["mlflow.parentRunId"] for c in children} == {parents[0]["info"]["run_id"]}
    assert {tags(c)["mssd.trial_id"] for c in children} == set(sweep.trial_results())


def test_children_hold_sampled_and_flattened_params(finished_sweep):
    sweep, _, rest = finished_sweep
    _, children = split_runs(rest.runs(sweep.name))
    gammas = set()
    for child in children:
        p = params(child)
        assert p["train.epochs"] == str(EPOCHS) and p["data.img_size"] == "64"
        gammas.add(float(p["losses.mssd.gamma"]))
        assert 1e-3 <= float(p["losses.mssd.gamma"]) <= 1
    assert len(gammas) == SAMPLES, "Optuna sampled the same gamma twice"


def test_each_epoch_is_logged_once_per_metric(finished_sweep):
    sweep, _, rest = finished_sweep
    _, children = split_runs(rest.runs(sweep.name))
    for child in children:
        run_id = child["info"]["run_id"]
        for key in ("map", "loss/total", "loss/distill", "loss/mask"):
            steps = [step for step, _ in rest.history(run_id, key)]
            assert steps == list(range(1, EPOCHS + 1)), f"{key} of {run_id}: steps {steps}"


def test_best_checkpoint_is_a_proxied_artifact(finished_sweep):
    sweep, _, rest = finished_sweep
    _, children = split_runs(rest.runs(sweep.name))
    for child in children:
        assert child["info"]["artifact_uri"].startswith("mlflow-artifacts:/"), "artifacts are not proxied"
        files = {f["path"]: f for f in rest.artifacts(child["info"]["run_id"], "checkpoints")}
        assert "checkpoints/best.pt" in files and int(files["checkpoints/best.pt"]["file_size"]) > 1000


def test_parent_run_holds_the_study_inputs(finished_sweep):
    sweep, _, rest = finished_sweep
    parents, _ = split_runs(rest.runs(sweep.name))
    paths = {f["path"] for f in rest.artifacts(parents[0]["info"]["run_id"], "study")}
    assert {"study/base-config.yaml", "study/search-space.yaml"} <= paths
