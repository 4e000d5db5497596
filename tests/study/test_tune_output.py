"""What a newcomer sees from `mssd tune`: Ray's live table on a terminal and our lines, none of Ray's
noise (token-auth warning, TensorBoard hint, per-trial result boxes, checkpoint lines); `--verbose`
brings Ray's own output back. Real `mssd tune` processes, each starting its own local Ray."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from study_helpers import write_space, write_tiny_config

pytestmark = pytest.mark.slow

NOISE = ("Token authentication", "TensorBoard", "Checkpoint successfully created", "Wrote the latest version",
         "result\u2502", "Trial trial_", "View detailed results")


def _tune(tmp_path: Path, tiny_data: Path, *extra: str, tty: bool) -> str:
    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    space = write_space(tmp_path, "params:\n  losses.mssd.gamma: {distribution: grid, values: [0.1]}\n")
    command = [sys.executable, "-c", "import sys; from study.cli import main; sys.exit(main())", "tune", str(config),
               "--space", str(space), "--workdir", str(tmp_path / "runs"), "--name", "out", *extra]
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    if not tty:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout + proc.stderr
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(command, stdin=child_fd, stdout=child_fd, stderr=child_fd, env=env)
    os.close(child_fd)
    chunks = []
    while True:
        try:
            data = os.read(main_fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=400) == 0
    os.close(main_fd)
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", b"".join(chunks).decode(errors="replace"))


def test_on_a_terminal_ray_shows_its_table_and_no_noise(tiny_data, tmp_path):
    text = _tune(tmp_path, tiny_data, tty=True)
    assert "TERMINATED" in text and "gamma" in text, text  # Ray's live table
    noise = [line for line in text.splitlines() if any(n in line for n in NOISE)]
    assert not noise, noise
    assert "study out: 1 completed" in text


def test_verbose_brings_rays_own_output_back_after_a_quiet_study_in_the_same_process(ray_address, tiny_data,
                                                                                    tmp_path, capsys):
    from study.cli import main

    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    space = write_space(tmp_path, "params:\n  losses.mssd.gamma: {distribution: grid, values: [0.1]}\n")
    args = ["tune", str(config), "--space", str(space), "--workdir", str(tmp_path / "runs"), "--address", ray_address]
    assert main([*args, "--name", "quiet"]) == 0
    quiet = capsys.readouterr().out
    assert main([*args, "--name", "loud", "--verbose"]) == 0
    loud = capsys.readouterr().out
    assert "Trial trial_" not in quiet and "study quiet: 1 completed" in quiet
    assert "Trial trial_" in loud and "result" in loud and "study loud: 1 completed" in loud  # Tune's own boxes
