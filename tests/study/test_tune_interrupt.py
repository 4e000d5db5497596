"""Ctrl-C during `mssd tune` ends it as Ctrl-C ends `mssd train`: exit 130, the running trial marked
KILLED in MLflow (status `interrupted`), our resume command printed, no `next: mssd export` and no
`Tuner.restore` hint (a real `mssd tune` process and a real SIGINT; every wait bounded)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from study_helpers import REPO, write_space, write_tiny_config

pytestmark = pytest.mark.slow


def test_sigint_exits_130_marks_the_running_trial_killed_and_prints_the_resume_command(ray_address, tiny_data,
                                                                                          tmp_path):
    from mlflow.tracking import MlflowClient

    from study import tracking

    config = write_tiny_config(tmp_path, tiny_data, epochs=40)  # far longer than the test waits
    space = write_space(tmp_path, "params:\n  losses.mssd.gamma: {distribution: grid, values: [0.1]}\n")
    workdir = tmp_path / "runs"
    command = [sys.executable, "-c", "import sys; from study.cli import main; sys.exit(main())", "tune", str(config),
               "--space", str(space), "--workdir", str(workdir), "--name", "intr", "--address", ray_address,
               "--quiet", "--no-asha"]
    driver = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 240
        while not any(p.read_text().strip() for p in (workdir / "intr").glob("trial_*/result.json")):
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "no trial reported an epoch in time"
            time.sleep(0.5)
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, out + err
    resume = f"mssd tune {config} --space {space} --resume --name intr --workdir {workdir}"
    assert resume in err and "Tuner.restore" not in err + out and "next: mssd export" not in out, out + err

    uri = tracking.default_tracking_uri(workdir)
    (trial,) = tracking.study_trials(uri, "intr")
    client = MlflowClient(uri)
    assert trial.status == "interrupted" and client.get_run(trial.run_id).info.status == "KILLED"
    assert client.get_run(tracking.parent_run_id(uri, "intr")).info.status == "KILLED"


def _default_sigint() -> None:
    """The driver starts with SIGINT at its default, as from a terminal. A suite run as a background job
    (`make test &`, nohup) has SIGINT ignored, which every child inherits, and a Python started with SIGINT
    ignored never installs its KeyboardInterrupt handler: the driver would not see this test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
