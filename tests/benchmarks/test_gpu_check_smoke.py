"""benchmarks/gpu_check.py --smoke runs every part on the CPU with only torch, numpy and the project
importable (as on the GPU machine's image), so the check cannot rot between the rare GPU loans."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ABSENT_ON_THE_GPU_IMAGE = ("ray", "optuna", "mlflow", "pycocotools", "faster_coco_eval")

# Installed through sitecustomize.py, so the packed-training worker processes of part e are blocked too.
BLOCKER = f"""
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT_ON_THE_GPU_IMAGE!r}:
            raise ImportError(f"{{name}} is not on the GPU image (blocked by the test)")
sys.meta_path.insert(0, _Absent())
"""


def _run_blocked(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def _smallest_size_of_every_family() -> list[str]:
    """Asked of the zoo in a fresh interpreter at the repository root: inside pytest, ``detectors`` can
    resolve to the test folder of the same name, depending on which test files were collected."""
    code = "import json; from detectors.zoo import FAMILIES; print(json.dumps([f.smallest for f in FAMILIES.values()]))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=True)
    return json.loads(done.stdout)


@pytest.mark.slow
def test_smoke_run_writes_every_part_without_the_packages_the_gpu_image_lacks(tmp_path):
    out = tmp_path / "out"
    done = _run_blocked(tmp_path, "--smoke", "--out", str(out))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads((out / "gpu_check.json").read_text())
    assert results["crashed"] == {}
    assert set(results["parts"]) == {"a", "b", "c", "d", "e"}
    assert results["coco_backend"] is None  # blocked: part d says what is missing instead of failing
    assert results["parts"]["d"]["note"] and results["parts"]["d"]["rows"]
    trained = {row["detector"] for row in results["parts"]["a"]["rows"] if row["method"] == "mssd"}
    assert trained == set(_smallest_size_of_every_family())
    assert all(row["status"] == "ok" for row in results["parts"]["a"]["rows"] if row["method"] == "mssd")
    assert [row["trials"] for row in results["parts"]["e"]["rows"]] == [1, 2]
    table = (out / "gpu_check.md").read_text()
    for part in ("| a |", "| b |", "| c |", "| d |", "| e |"):
        assert part in table


def test_the_check_refuses_a_full_run_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = _run_blocked(tmp_path, "--parts", "a", "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr
    assert not (tmp_path / "out").exists()


def test_sync_counter_counts_each_read_of_a_tensor_into_python_on_the_cpu():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gpu_check_parts.common import SyncCounter
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    counter = SyncCounter(torch.device("cpu"))
    x = torch.ones(3)

    def step():
        y = x * 2  # stays a tensor: no read
        return y.sum().item() + float(y[0]) + bool(y[1] > 0)

    assert counter.wrap(step)() == 9.0
    assert counter.count == 3
    assert sum(counter.sites.values()) == 3
    x.sum().item()  # outside the wrapped call: not counted
    assert counter.count == 3
