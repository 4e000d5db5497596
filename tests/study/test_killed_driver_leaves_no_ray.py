"""A `mssd tune` driver killed with SIGKILL (a user's `kill -9`, the OOM killer) leaves no process of its
local Ray behind: ray::DashboardAgent and ray::RuntimeEnvAgent, which Ray keeps 60-90 s after its raylet
died, and the trial workers are stopped within seconds, and one stderr line names them. Only the pids of
this test's own session are watched or touched (recorded under the driver before the kill, with their
start times). Real Ray, started by the driver; Linux only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from study_helpers import REPO, SPACES, write_tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

GONE_WITHIN_S = 20.0


def _running(known: dict[int, tuple[int, str]]) -> dict[int, str]:
    """Which of ``known`` still run as the same process (pid and start time), zombies excluded."""
    alive = {}
    for pid, (start, name) in known.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[19]) == start:
            alive[pid] = name
    return alive


def test_a_sigkilled_driver_leaves_no_ray_process_behind(tiny_data, tmp_path):
    import ray

    from study.tune.orphans import ray_processes

    config = write_tiny_config(tmp_path, tiny_data, epochs=40)  # still training when it is killed
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, "-c", "import sys; from study.cli import main; sys.exit(main())",
                               "tune", str(config), "--space", str(SPACES / "mssd.yaml"), "--samples", "1",
                               "--no-asha", "--workdir", str(tmp_path / "runs"), "--name", "k", "--quiet"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ray_dir = os.path.dirname(ray.__file__)
    known: dict[int, tuple[int, str]] = {}
    try:
        deadline = time.monotonic() + 240
        while not any(name.startswith("ray::ImplicitFunc") for _, name in known.values()):
            assert driver.poll() is None, driver.communicate()[0][-3000:]
            assert time.monotonic() < deadline, f"no trial started in time; Ray processes: {known}"
            time.sleep(0.5)
            known.update(ray_processes(driver.pid, ray_dir))
        time.sleep(2.0)  # every agent is up by now
        known.update(ray_processes(driver.pid, ray_dir))
        assert any(name == "ray::DashboardAgent" for _, name in known.values()), known

        driver.send_signal(signal.SIGKILL)
        driver.wait()
        killed = time.monotonic()
        while _running(known) and time.monotonic() - killed < GONE_WITHIN_S:
            time.sleep(0.25)
        left = _running(known)
        assert not left, f"still running {time.monotonic() - killed:.0f} s after the driver's SIGKILL: {left}"
        output = driver.communicate(timeout=30)[0]  # the watcher holds the pipe until it has finished
        line = [x for x in output.splitlines() if "ended without stopping its local Ray" in x]
        assert line and "ray::DashboardAgent" in line[0], output[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in _running(known):  # never leak this test's own processes
            os.kill(pid, signal.SIGKILL)
