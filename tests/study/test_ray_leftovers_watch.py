"""The watcher of a study's local Ray (``study.tune.orphans``) finds only the Ray processes under its driver
(by pid and start time) and stops them, SIGTERM then SIGKILL; a reused pid is left alone. Real processes,
started by this test under itself; Linux only (it reads /proc). The end-to-end check, a SIGKILLed
``mssd tune``, is test_killed_driver_leaves_no_ray.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# A parent that starts one grandchild, then both sleep: stands for the raylet and an agent under it.
TREE = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "time.sleep(60)")
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"


def _wait_for_children(pid: int, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            if len(f.read().split()) >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not start {count} children in {timeout} s")


@pytest.fixture
def fake_ray(tmp_path):
    """A folder standing for the Ray package, and cleanup of whatever a test started (grandchildren too)."""
    from study.tune.orphans import ray_processes

    started: list[subprocess.Popen] = []
    ray_dir = str(tmp_path / "site-packages" / "ray")
    yield ray_dir, started
    for pid in ray_processes(os.getpid(), ray_dir):
        os.kill(pid, signal.SIGKILL)
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_only_the_processes_started_from_the_ray_package_and_their_children_are_recorded(fake_ray):
    from study.tune.orphans import ray_processes

    ray_dir, started = fake_ray
    raylet = subprocess.Popen([sys.executable, "-c", TREE, f"{ray_dir}/core/raylet"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "/elsewhere/tool"])
    started += [raylet, other]
    _wait_for_children(raylet.pid, 1)
    found = ray_processes(os.getpid(), ray_dir)
    with open(f"/proc/{raylet.pid}/task/{raylet.pid}/children") as f:
        agent = int(f.read().split()[0])
    assert set(found) == {raylet.pid, agent}
    assert other.pid not in found


def test_stop_ends_the_recorded_processes_and_kills_one_that_ignores_sigterm(fake_ray):
    from study.tune.orphans import ray_processes, stop

    ray_dir, started = fake_ray
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"{ray_dir}/a.py"])
    stubborn = subprocess.Popen([sys.executable, "-c", STUBBORN, f"{ray_dir}/b.py"])
    started += [polite, stubborn]
    time.sleep(1.0)  # let the stubborn one install its SIGTERM handler
    known = ray_processes(os.getpid(), ray_dir)
    assert set(known) == {polite.pid, stubborn.pid}
    begun = time.monotonic()
    assert sorted(stop(known, grace=1.0)) == sorted([polite.pid, stubborn.pid])
    assert polite.wait(5) == -signal.SIGTERM and stubborn.wait(5) == -signal.SIGKILL
    assert time.monotonic() - begun < 5


def test_a_pid_now_held_by_another_process_is_not_signalled(fake_ray):
    from study.tune.orphans import stop

    _, started = fake_ray
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started.append(bystander)
    with open(f"/proc/{bystander.pid}/stat") as f:
        start = int(f.read().rpartition(")")[2].split()[19])
    # recorded with another start time: the recorded process ended and its pid was reused
    assert stop({bystander.pid: (start - 1, "ray::DashboardAgent")}, grace=0.1) == []
    assert bystander.poll() is None
