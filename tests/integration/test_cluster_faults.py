"""Faults of a real sweep on the two-node cluster, each reproduced for real (no mocks):

- a worker node lost mid-sweep (SIGKILL to its raylet and trial processes), after its trial checkpointed;
- the driver (`mssd tune`) killed mid-sweep, then `mssd tune --resume`;
- the MLflow server stopped for a while mid-sweep, then restarted;
- the latest checkpoint of a trial truncated or missing when the study resumes.

What each asserts: every trial finishes; a resumed trial continues at its last good checkpoint + 1;
MLflow holds each epoch of each trial exactly once, with one child run per trial.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from sweep import MlflowRest, Sweep, split_runs, study_name, tags, wait_for

pytestmark = pytest.mark.integration

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def make_sweep(client_env, ray, shared_storage, tmp_path, tmp_path_factory):
    def make(prefix: str, *, samples: int, epochs: int, extra: tuple[str, ...] = ()) -> Sweep:
        return Sweep(study_name(prefix), tmp_path, shared_storage, tmp_path_factory.getbasetemp() / "smoke-data",
                     dict(client_env), ray.address, samples=samples, epochs=epochs, extra=extra)

    return make


def finish(sweep: Sweep, proc, timeout: float = 300) -> str:
    try:
        proc.wait(timeout=timeout)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    log = (sweep.workdir / "tune.log").read_text()
    assert proc.returncode == 0, f"mssd tune exited {proc.returncode}:\n{log[-4000:]}"
    return log


def epochs_by_attempt(lines: list[dict]) -> list[list[int]]:
    """Split a trial's reported epochs into attempts: Tune resets ``iterations_since_restore`` on restore."""
    attempts: list[list[int]] = []
    for line in lines:
        if line.get("iterations_since_restore") == 1 or not attempts:
            attempts.append([])
        attempts[-1].append(int(line["epoch"]))
    return attempts


def assert_mlflow_has_each_epoch_once(rest: MlflowRest, sweep: Sweep, epochs: int) -> None:
    parents, children = split_runs(rest.runs(sweep.name))
    assert len(parents) == 1, f"{len(parents)} parent runs"
    trial_ids = [tags(c)["mssd.trial_id"] for c in children]
    assert sorted(trial_ids) == sorted(set(trial_ids)), f"duplicate child runs: {sorted(trial_ids)}"
    assert len(children) == sweep.samples, f"{len(children)} child runs for {sweep.samples} trials"
    for child in children:
        run_id = child["info"]["run_id"]
        for key in ("epoch", "map", "loss/total"):
            steps = [step for step, _ in rest.history(run_id, key)]
            assert steps == list(range(1, epochs + 1)), f"trial {tags(child)['mssd.trial_id']} {key}: {steps}"


def test_worker_node_lost_mid_sweep_resumes_its_trial_from_the_last_checkpoint(make_sweep, ray, mlflow):
    epochs = 5
    sweep = make_sweep("node-loss", samples=2, epochs=epochs)
    proc = sweep.start()

    def worker_trial_checkpointed():
        for trial, lines in sweep.trial_results().items():
            last = lines[-1] if lines else {}
            if last.get("node_ip") == WORKER_IP and last["epoch"] < epochs - 1 and sweep.checkpoints(trial):
                return trial
        return None

    trial = wait_for(worker_trial_checkpointed, timeout=240, what="a checkpoint of the worker's trial", proc=proc,
                     interval=0.2)
    seen = sweep.trial_results()[trial][-1]["epoch"]  # reported, with its checkpoint, before the kill
    ray.kill_worker(ray.workers[0])
    on_disk = {json.loads((c / "epoch.json").read_text())["epoch"] for c in sweep.checkpoints(trial)}
    log = finish(sweep, proc)
    assert "2 completed" in log, log[-2000:]

    lines = sweep.trial_results()[trial]
    attempts = epochs_by_attempt(lines)
    trace = [(line["epoch"], line["iterations_since_restore"], line["node_ip"]) for line in lines]
    assert len(attempts) >= 2, f"trial {trial} was never restored: {trace}"
    # Every report carries a checkpoint, so the lost attempt's last reported epoch is the trial's last
    # checkpoint as Tune knows it: the trial must go on from there. (A checkpoint the dying node wrote but
    # never reported may be on disk too; Tune rightly ignores it.)
    registered = attempts[-2][-1]
    assert seen <= registered and registered in on_disk, (seen, registered, sorted(on_disk), trace)
    assert attempts[-1][0] == registered + 1, (
        f"restored at epoch {attempts[-1][0]}, the last reported checkpoint was epoch {registered}: {trace}")
    assert attempts[-1][-1] == epochs, trace
    assert sweep.trial_results()[trial][-1]["node_ip"] == HEAD_IP
    assert_mlflow_has_each_epoch_once(MlflowRest(mlflow), sweep, epochs)


def test_driver_killed_then_resume_runs_exactly_the_requested_trials(make_sweep, mlflow):
    epochs, samples = 3, 3
    sweep = make_sweep("driver-kill", samples=samples, epochs=epochs)
    proc = sweep.start()
    wait_for(lambda: sum(len(v) for v in sweep.trial_results().values()) >= 2, timeout=240,
             what="two epochs reported", proc=proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its process group, as a lost SSH session would
    proc.wait(timeout=30)

    resumed = sweep.start(resume=True, log_name="resume.log")
    resumed.wait(timeout=300)
    log = (sweep.workdir / "resume.log").read_text()
    assert resumed.returncode == 0, log[-4000:]
    assert f"{samples} completed" in log, log[-2000:]

    tracked = sweep.tracked_trial_ids()
    assert len(tracked) == samples, f"{len(tracked)} trials for --samples {samples}: {sorted(tracked)}"
    # A trial the killed driver started but never saved in its experiment state is replaced by the
    # resumed study, not repeated: its folder stays, and its MLflow run is retired (checked below:
    # exactly `samples` live child runs).
    results = {trial: lines for trial, lines in sweep.trial_results().items() if trial in tracked}
    assert set(results) == tracked, f"trials without results: {sorted(tracked - set(results))}"
    configs = [json.dumps(lines[-1]["config"], sort_keys=True) for lines in results.values()]
    assert len(set(configs)) == samples, "a trial was repeated with the same sampled config"
    assert_mlflow_has_each_epoch_once(MlflowRest(mlflow), sweep, epochs)


def test_mlflow_server_down_mid_sweep_loses_no_metric(make_sweep, mlflow):
    epochs = 20  # an epoch of a tiny trial takes about a second: the sweep must outlast the outage's start
    sweep = make_sweep("mlflow-outage", samples=2, epochs=epochs)
    proc = sweep.start()
    wait_for(lambda: any(sweep.trial_results().values()), timeout=240, what="a first epoch", proc=proc)
    mlflow.kill()
    try:
        reported = sum(len(v) for v in sweep.trial_results().values())
        # Down long enough that epochs are reported (and must be buffered) while it is away.
        wait_for(lambda: sum(len(v) for v in sweep.trial_results().values()) >= reported + 2, timeout=180,
                 what="two epochs reported while MLflow is down", proc=proc)
        time.sleep(2)
    finally:
        mlflow.start()
    log = finish(sweep, proc)
    assert "2 completed" in log, log[-2000:]
    assert_mlflow_has_each_epoch_once(MlflowRest(mlflow), sweep, epochs)


def test_damaged_latest_checkpoint_restores_from_the_previous_one(make_sweep, mlflow):
    """Two trials, killed with the driver after two checkpoints each: one's latest `last.pt` is cut in
    half (a write torn by a crash), the other's is gone. Resumed, each must start from the checkpoint
    before it, never load the partial file and never fail."""
    epochs = 20  # long enough that both trials are still running when each has two checkpoints
    sweep = make_sweep("ckpt-damage", samples=2, epochs=epochs, extra=("--keep-checkpoints", "3"))
    proc = sweep.start()

    def second_checkpoint_known_for_each():
        # The damaged checkpoint must be the one --resume restores (recorded in the experiment state),
        # and it must have a complete predecessor: the second or a later checkpoint of each trial.
        known = sweep.known_checkpoints()
        results = sweep.trial_results()
        ready = {t: name for t, name in known.items()
                 if name > "checkpoint_000000" and results.get(t) and results[t][-1]["epoch"] < epochs}
        return ready if len(ready) == 2 else None

    known = wait_for(second_checkpoint_known_for_each, timeout=240, what="a second known checkpoint per trial",
                     proc=proc, interval=0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    known = sweep.known_checkpoints()  # the state as the killed driver left it
    trials = sorted(known)
    assert len(trials) == 2

    good_epoch = {}
    for trial, damage in zip(trials, ("truncated", "missing"), strict=True):
        folder = sweep.experiment_dir / f"trial_{trial}"
        previous = max(p for p in folder.glob("checkpoint_*") if p.name < known[trial])
        good_epoch[trial] = json.loads((previous / "epoch.json").read_text())["epoch"]
        target = folder / known[trial] / "last.pt"
        if damage == "truncated":
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        else:
            target.unlink()

    resumed = sweep.start(resume=True, log_name="resume.log")
    resumed.wait(timeout=300)
    log = (sweep.workdir / "resume.log").read_text()
    assert resumed.returncode == 0 and "2 completed" in log, log[-4000:]
    for trial in trials:
        attempts = epochs_by_attempt(sweep.trial_results()[trial])
        assert attempts[-1][0] == good_epoch[trial] + 1, (
            f"trial {trial} resumed at epoch {attempts[-1][0]}; its last complete checkpoint was epoch "
            f"{good_epoch[trial]}")
        assert attempts[-1][-1] == epochs
    assert_mlflow_has_each_epoch_once(MlflowRest(mlflow), sweep, epochs)
