"""Launching ``mssd tune`` as a user would, and reading back what MLflow and Tune recorded.

MLflow is read through its REST API only (what any client of the server sees); Tune's per-trial
``result.json`` files in the shared storage tell which epochs each attempt of a trial ran.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from topology import VENV_BIN

REPO = Path(__file__).resolve().parents[2]
# Tiny trials (brief: configs/smoke.yaml at 64 px, 2 steps an epoch); the epochs are set per test.
TINY = ["--set", "data.img_size=64", "--set", "train.max_steps_per_epoch=2", "--set", "train.batch_size=4",
        "--set", "data.synthetic.images=8"]


def study_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@dataclass
class Sweep:
    """One ``mssd tune`` invocation against the topology, with its folders."""

    name: str
    workdir: Path
    storage: Path
    data_root: Path
    env: dict[str, str]
    address: str
    samples: int = 2
    epochs: int = 2
    extra: tuple[str, ...] = ()

    def argv(self, *, resume: bool = False) -> list[str]:
        args = [str(VENV_BIN / "mssd"), "tune", str(REPO / "configs" / "smoke.yaml"),
                "--space", str(REPO / "search_spaces" / "mssd.yaml"),
                "--name", self.name, "--workdir", str(self.workdir), "--storage", self.storage.as_uri(),
                "--address", self.address, "--quiet", "--samples", str(self.samples),
                "--max-concurrent", "2", "--no-asha",
                *TINY, "--set", f"train.epochs={self.epochs}", "--set", f"data.root={self.data_root}",
                *self.extra]
        return [*args, "--resume"] if resume else args

    def start(self, *, resume: bool = False, log_name: str = "tune.log") -> subprocess.Popen:
        log = open(self.workdir / log_name, "a")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(self.argv(resume=resume), env=self.env, cwd=self.workdir, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, text=True)
        log.close()
        return proc

    def run(self, *, resume: bool = False, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(resume=resume), env=self.env, cwd=self.workdir, capture_output=True,
                              text=True, timeout=timeout)

    @property
    def experiment_dir(self) -> Path:
        return self.storage / self.name

    def trial_results(self) -> dict[str, list[dict]]:
        """Every result Tune recorded per trial (``result.json``: one line per report, across attempts)."""
        out = {}
        for path in sorted(self.experiment_dir.glob("trial_*/result.json")):
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            out[path.parent.name.removeprefix("trial_")] = lines
        return out

    def tracked_trial_ids(self) -> set[str]:
        """The trials in the driver's last saved experiment state: the study as Tune (and a resume) sees it.
        A trial started in the seconds before a driver was killed may have a folder but no entry here."""
        states = sorted(self.experiment_dir.glob("experiment_state-*.json"))
        if not states:
            return set()
        state = json.loads(states[-1].read_text())
        found = (re.search(r'"trial_id":\s*"([^"]+)"', str(trial_json)) for trial_json, _ in state.get("trial_data", []))
        return {match.group(1) for match in found if match}

    def checkpoints(self, trial_id: str) -> list[Path]:
        return sorted((self.experiment_dir / f"trial_{trial_id}").glob("checkpoint_*"))

    def known_checkpoints(self) -> dict[str, str]:
        """Per trial, the checkpoint the driver's last saved experiment state points at: the one a
        ``--resume`` restores. (Tune saves that state every ~10 s, so it can lag the files on disk.)"""
        states = sorted(self.experiment_dir.glob("experiment_state-*.json"))
        if not states:
            return {}
        try:
            state = json.loads(states[-1].read_text())
        except (OSError, ValueError):  # being rewritten right now
            return {}
        known = {}
        for trial_json, runtime_json in state.get("trial_data", []):
            trial = re.search(r'"trial_id":\s*"([^"]+)"', str(trial_json))
            names = re.findall(r'checkpoint_dir_name\\*":\s*\\*"(checkpoint_\d+)', str(runtime_json))
            if trial and names:
                known[trial.group(1)] = max(names)
        return known


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.5, proc=None):
    """Poll until ``predicate()`` is truthy (returned); fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"`mssd tune` exited with {proc.returncode} while waiting for {what}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class MlflowRest:
    """The tracking server's REST API with the admin's basic-auth credentials."""

    def __init__(self, server) -> None:
        self.url = server.url
        token = base64.b64encode(f"{server.admin_user}:{server.admin_password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def _call(self, method: str, path: str, *, params: dict | None = None, body: dict | None = None) -> dict:
        url = f"{self.url}/api/2.0/mlflow/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers=self.headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"{}")

    def experiment_id(self, name: str) -> str:
        return self._call("GET", "experiments/get-by-name", params={"experiment_name": name})["experiment"][
            "experiment_id"]

    def runs(self, experiment_name: str) -> list[dict]:
        experiment = self.experiment_id(experiment_name)
        runs, token = [], None
        while True:
            body = {"experiment_ids": [experiment], "max_results": 500}
            if token:
                body["page_token"] = token
            page = self._call("POST", "runs/search", body=body)
            runs += page.get("runs", [])
            token = page.get("next_page_token")
            if not token:
                return runs

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        page = self._call("GET", "metrics/get-history", params={"run_id": run_id, "metric_key": key})
        return sorted((int(m["step"]), float(m["value"])) for m in page.get("metrics", []))

    def artifacts(self, run_id: str, path: str = "") -> list[dict]:
        return self._call("GET", "artifacts/list", params={"run_id": run_id, "path": path}).get("files", [])


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def split_runs(runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(parents, children): a child carries ``mlflow.parentRunId``."""
    children = [r for r in runs if "mlflow.parentRunId" in tags(r)]
    parents = [r for r in runs if "mlflow.parentRunId" not in tags(r)]
    return parents, children
