"""An interrupted study: the driver process is killed mid-sweep, then `mssd tune --resume` finishes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from study_helpers import REPO, SPACES, write_tiny_config

pytestmark = pytest.mark.slow


def _finished_trials(folder: Path, epochs: int) -> list[str]:
    done = []
    for result in folder.glob("trial_*/result.json"):
        lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
        if lines and lines[-1].get("epoch") == epochs:
            done.append(result.parent.name)
    return done


def _mssd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from study.cli import main; sys.exit(main())", *args]


def test_a_killed_driver_resumes_to_completion_without_repeating_trials(ray_address, tiny_data, tmp_path):
    from mlflow.tracking import MlflowClient

    from study import tracking

    config = write_tiny_config(tmp_path, tiny_data, epochs=2)
    workdir = tmp_path / "runs"
    common = ["--workdir", str(workdir), "--name", "killed", "--address", ray_address, "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen(_mssd("tune", str(config), "--space", str(SPACES / "mssd.yaml"), "--samples", "3",
                                    "--max-concurrent", "1", "--no-asha", *common),
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    folder = workdir / "killed"
    deadline = time.monotonic() + 240
    while not _finished_trials(folder, 2):
        assert driver.poll() is None, driver.stdout.read()
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.5)
    time.sleep(1.0)  # let the experiment state record the finished trial
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = set(_finished_trials(folder, 2))
    epochs_before = {t: (folder / t / "result.json").read_text() for t in before}

    resumed = subprocess.run(_mssd("tune", str(config), "--space", str(SPACES / "mssd.yaml"), "--resume", *common),
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    trials = tracking.study_trials(tracking.default_tracking_uri(workdir), "killed")
    assert len(trials) == 3 and len({t.trial_id for t in trials}) == 3  # no duplicate MLflow runs
    # (a trial that ended just before the kill, its end not yet written, gets it from the resumed driver)
    assert [t.status for t in trials] == ["completed"] * 3, [(t.trial_id, t.status) for t in trials]
    client = MlflowClient(tracking.default_tracking_uri(workdir))
    for t in trials:
        assert [m.step for m in sorted(client.get_metric_history(t.run_id, "epoch"), key=lambda m: m.step)] == [1, 2]
    # A trial the killed driver had just started but Tune's experiment state had not yet recorded may
    # leave a folder behind; its MLflow run is retired, and the sweep still has exactly 3 trials.
    for t in trials:  # no trial restarted from scratch
        result = folder / f"trial_{t.trial_id}" / "result.json"
        epochs = [json.loads(x)["epoch"] for x in result.read_text().splitlines() if x.strip()]
        assert epochs.count(1) == 1 and epochs[-1] == 2, (result, epochs)
    for t in before:  # finished before the kill: its results are kept, never re-run from epoch 1
        assert (folder / t / "result.json").read_text().startswith(epochs_before[t].splitlines()[0])
