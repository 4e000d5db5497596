"""Against a real `mlflow server` subprocess on 127.0.0.1: one-line failure when it is unreachable,
and a sweep that loses no metric point while the server is stopped and restarted mid-sweep."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from study_helpers import REPO, free_port, write_space, write_tiny_config

# MLflow's job runner (two more processes importing mlflow, for its GenAI jobs) is nothing mssd uses:
# without it a server answers in about half the time (9.5 s against 19-22 s measured on the 2-core box).
NO_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _start_server(folder: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=folder, env={**os.environ, **NO_JOBS}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
        assert proc.poll() is None, "mlflow server exited"
    proc.kill()
    raise AssertionError("mlflow server did not come up")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_an_unreachable_server_is_one_line_before_ray_or_any_trial_starts(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    space = REPO / "search_spaces" / "paper-table5-gamma.yaml"
    out = subprocess.run([sys.executable, "-c", "import sys; from study.cli import main; sys.exit(main())", "tune",
                          str(REPO / "configs" / "smoke.yaml"), "--space", str(space), "--workdir",
                          str(tmp_path / "runs"), "--name", "x", "--set", f"data.root={tmp_path / 'data'}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0] and uri in lines[0], out.stderr
    # A port nobody listens on is given seconds, not the half minute a slow-starting server gets.
    assert re.search(r"connection refused for \d s\)", lines[0]), lines[0]
    assert "Ray" not in out.stdout + out.stderr and not (tmp_path / "runs" / "x" / "study.json").exists()


@pytest.mark.slow
def test_a_sweep_against_a_server_loses_no_metric_when_the_server_restarts_mid_sweep(
        ray_address, tiny_data, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from study import tracking
    from study.tune import StudyOptions, run_study

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    config = write_tiny_config(tmp_path, tiny_data, epochs=3)
    space = write_space(tmp_path, "params:\n  losses.mssd.gamma: {distribution: grid, values: [0.1, 0.01]}\n")
    outage = {}

    def restart_after_first_epoch() -> None:
        nonlocal server
        client = MlflowClient(uri)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if any(r.data.metrics.get("epoch") for r in client.search_runs(
                        [client.get_experiment_by_name("srv").experiment_id], "tags.`mssd.role` = 'trial'")):
                    break
            except Exception:
                pass
            time.sleep(0.5)
        _stop(server)
        outage["stopped"] = time.monotonic()
        time.sleep(6)
        server = _start_server(tmp_path, port)
        outage["restarted"] = time.monotonic()

    thread = threading.Thread(target=restart_after_first_epoch, daemon=True)
    thread.start()
    try:
        summary = run_study(StudyOptions(config=str(config), space=str(space), name="srv",
                                         workdir=str(tmp_path / "runs"), max_concurrent=2, asha=False, verbose=0))
        thread.join(timeout=120)
        assert "restarted" in outage, "the server was never stopped mid-sweep"
        assert summary.statuses == {"completed": 2} and summary.unlogged == 0
        trials = tracking.study_trials(uri, "srv")
        assert len(trials) == 2 and all(t.status == "completed" for t in trials)
        client = MlflowClient(uri)
        for t in trials:
            for key in ("epoch", "map", "loss/total"):
                steps = [m.step for m in client.get_metric_history(t.run_id, key)]
                assert sorted(steps) == [1, 2, 3], (key, steps)  # every epoch, exactly once
            assert [a.path for a in client.list_artifacts(t.run_id, "checkpoints")] == ["checkpoints/best.pt"]
        parent = client.get_run(trials[0].run_id).data.tags["mlflow.parentRunId"]
        assert client.get_run(parent).info.status == "FINISHED"
    finally:
        thread.join(timeout=60)
        _stop(server)


@pytest.mark.slow
def test_refused_credentials_are_one_line_naming_mlflows_variables(tmp_path, monkeypatch):
    from study.tracking import TrackingError, check_tracking

    ini = tmp_path / "auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{tmp_path / 'auth.db'}\nadmin_username = admin\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = free_port()
    env = {**os.environ, **NO_JOBS, "MLFLOW_AUTH_CONFIG_PATH": str(ini),
           "MLFLOW_AUTH_ADMIN_PASSWORD": "right-Passw0rd!", "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'server.db'}", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "mlflow server did not come up"
                time.sleep(0.5)
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        with pytest.raises(TrackingError, match="no credentials were sent"):
            check_tracking(uri)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(TrackingError) as info:
            check_tracking(uri)
        assert "\n" not in str(info.value) and "HTTP 401" in str(info.value) and "MLFLOW_TRACKING_PASSWORD" in str(info.value)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "right-Passw0rd!")
        assert "reachable" in check_tracking(uri)
    finally:
        _stop(proc)
