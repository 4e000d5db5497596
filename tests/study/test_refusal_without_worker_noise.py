"""No Ray worker's output reaches a refusal's one line: Ray forwards what its workers write to the driver's
stderr whenever it arrives (a worker's interpreter shutdown, "Exception ignored in: <function WeakSet...>",
came into a test's captured refusal). A Ray that a caller starts for in-process studies (tests) forwards
nothing; a Ray that `mssd` itself started or joined is released when its sweep ends and before a refusal
is printed. A real worker keeps writing to its stderr throughout."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from study_helpers import REPO, write_space, write_tiny_config

pytestmark = pytest.mark.slow

NOISE = "Exception ignored in: <function WeakSet.__init__.<locals>._remove at 0x7f>"

# A worker that writes NOISE to its stderr every 20 ms for `seconds`, as an exiting worker's interpreter does.
NOISY_ACTOR = f'''
import ray

@ray.remote(num_cpus=0)
class Noisy:
    def start(self, seconds):
        import sys, threading, time

        def talk():
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                print({NOISE!r}, file=sys.stderr, flush=True)
                time.sleep(0.02)

        threading.Thread(target=talk, daemon=True).start()
        return True
'''


def test_a_refusal_printed_beside_a_noisy_worker_of_a_callers_ray_is_one_line(ray_address, tmp_path, capsys):
    import ray

    from study.cli import main

    scope: dict = {}
    exec(NOISY_ACTOR, scope)  # noqa: S102 -- the same actor as the subprocess test's
    noisy = scope["Noisy"].remote()
    try:
        ray.get(noisy.start.remote(4.0), timeout=60)
        time.sleep(1.0)  # forwarded lines arrive within a fraction of a second
        code = main(["report", "nope", "--workdir", str(tmp_path)])
        time.sleep(1.0)
    finally:
        ray.kill(noisy)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("mssd: error: ") and "\n" not in err, err


SCRIPT = NOISY_ACTOR + '''
import sys, time
from study.cli import main
from study.cluster import RayAddress
from study.tune.ray_runtime import init_ray

init_ray(RayAddress.parse(None))  # the Ray `mssd tune` starts: its workers' output is forwarded here
noisy = Noisy.remote()  # held: an actor without a handle is stopped
ray.get(noisy.start.remote(60.0), timeout=120)
time.sleep(3.0)
print("mssd-test: refusing now", file=sys.stderr, flush=True)
code = main(["report", "nope", "--workdir", sys.argv[1]])
time.sleep(3.0)  # the process goes on, as `mssd tune --confirm` would after its sweep
sys.exit(code)
'''


def test_a_refusal_beside_a_noisy_worker_of_mssds_own_ray_is_the_last_line_whole(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    lines = run.stderr.splitlines()
    assert run.returncode == 2, run.stderr[-3000:]
    before = lines[:lines.index("mssd-test: refusing now")]
    assert any(NOISE in line for line in before), run.stderr[-3000:]  # the worker's lines do reach this stderr
    # (while the refusing command works, the worker still writes; from the refusal on, nothing)
    assert lines[-1].startswith("mssd: error: no study 'nope'") and NOISE not in lines[-1], lines[-5:]


SWEEP = """
import sys
import ray
from study.cli import main

code = main(["tune", sys.argv[1], "--space", sys.argv[2], "--workdir", "runs", "--name", "s", "--quiet"])
print(f"mssd-test: rc {code}, ray connected after the sweep: {ray.is_initialized()}", file=sys.stderr)
"""


def test_mssd_tune_ends_its_ray_connection_before_it_prints_the_summary(tiny_data, tmp_path):
    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    space = write_space(tmp_path, "params:\n  losses.mssd.gamma: {distribution: grid, values: [0.1]}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", SWEEP, str(config), str(space)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert "mssd-test: rc 0, ray connected after the sweep: False" in run.stderr, run.stderr[-3000:]
    assert "study s: 1 completed" in run.stdout, run.stdout[-3000:]
