"""Real sweeps on a real local Ray with the embedded MLflow store (SQLite).

One 3-point grid study runs once for the module, with two real faults injected through
``MSSD_INJECT_FAULT`` (study.faults): the gamma=0.1 trial raises once in epoch 2 (Tune retries it
from its epoch-1 checkpoint) and the gamma=1.0 trial's loss goes non-finite in epoch 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from study_helpers import write_space, write_tiny_config

pytestmark = pytest.mark.slow

GRID = "params:\n  losses.mssd.gamma: {distribution: grid, values: [1.0, 0.1, 0.01]}\n"


def _result_epochs(folder: Path, trial_id: str) -> list[int]:
    lines = (folder / f"trial_{trial_id}" / "result.json").read_text().splitlines()
    return [int(json.loads(line)["epoch"]) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def grid_study(ray_address, tiny_data, tmp_path_factory):
    import os

    from study import tracking
    from study.tune import StudyOptions, run_study

    tmp = tmp_path_factory.mktemp("grid")
    config = write_tiny_config(tmp, tiny_data, epochs=2)
    space = write_space(tmp, GRID)
    os.environ["MSSD_INJECT_FAULT"] = "nonfinite@1:losses.mssd.gamma=1.0;raise-once@2:losses.mssd.gamma=0.1"
    try:
        summary = run_study(StudyOptions(config=str(config), space=str(space), name="grid", workdir=str(tmp / "runs"),
                                         max_concurrent=2, verbose=0, asha=False, max_failures=2))
    finally:
        del os.environ["MSSD_INJECT_FAULT"]
    uri = tracking.default_tracking_uri(tmp / "runs")
    trials = {r.params["losses.mssd.gamma"]: r for r in tracking.study_trials(uri, "grid")}
    return summary, uri, trials, tmp


def test_parent_run_and_one_child_per_trial_with_params_and_metric_histories(grid_study):
    from mlflow.tracking import MlflowClient

    summary, uri, trials, _ = grid_study
    assert sorted(trials) == ["0.01", "0.1", "1.0"]
    client = MlflowClient(uri)
    parent = client.get_run(next(iter(trials.values())).run_id).data.tags["mlflow.parentRunId"]
    parent_run = client.get_run(parent)
    assert parent_run.data.tags["mssd.study"] == "grid" and "version.ray" in parent_run.data.tags
    assert {a.path for a in client.list_artifacts(parent, "study")} == {"study/base-config.yaml",
                                                                        "study/search-space.yaml"}
    ok = trials["0.01"]
    assert ok.status == "completed" and ok.params["data.img_size"] == "64" and ok.searched == ["losses.mssd.gamma"]
    for key in ("map", "loss/total", "loss/distill", "loss/mask", "time/train_steps"):
        assert [e for e, _ in tracking_history(uri, ok.run_id, key)] == [1, 2], key
    assert [a.path for a in client.list_artifacts(ok.run_id, "checkpoints")] == ["checkpoints/best.pt"]


def tracking_history(uri, run_id, key):
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def test_a_trial_that_raises_once_is_retried_from_its_checkpoint_and_logs_each_epoch_once(grid_study):
    summary, uri, trials, tmp = grid_study
    retried = trials["0.1"]
    folder = tmp / "runs" / "grid"
    assert (folder / ".faults" / f"{retried.trial_id}.raise-once@2").exists()  # the fault really fired
    assert retried.status == "completed"
    # Resumed from the epoch-1 checkpoint: Tune saw epoch 1 once, then epoch 2 (not 1, 1, 2).
    assert _result_epochs(folder, retried.trial_id) == [1, 2]
    assert tracking_history(uri, retried.run_id, "epoch") == [(1, 1.0), (2, 2.0)]
    assert [e for e, _ in tracking_history(uri, retried.run_id, "map")] == [1, 2]


def test_a_nonfinite_trial_fails_at_once_without_retry_while_the_others_finish(grid_study):
    summary, uri, trials, tmp = grid_study
    bad = trials["1.0"]
    from mlflow.tracking import MlflowClient

    assert bad.status == "nonfinite"
    run = MlflowClient(uri).get_run(bad.run_id)
    assert run.info.status == "FAILED" and "non-finite" not in run.data.tags["mssd.error"] or "nan" in run.data.tags["mssd.error"]
    assert _result_epochs(tmp / "runs" / "grid", bad.trial_id) == [1]  # one terminal report, no retry
    assert tracking_history(uri, bad.run_id, "epoch") == []
    assert summary.statuses == {"nonfinite": 1, "completed": 2}


def test_export_picks_a_finished_trial_and_train_accepts_the_file_unchanged(grid_study):
    from mlflow.tracking import MlflowClient

    from study.cli import main
    from study.config import load_config

    summary, uri, trials, tmp = grid_study
    out = tmp / "best.yaml"
    assert main(["export", "grid", "--workdir", str(tmp / "runs"), "--out", str(out), "--epochs", "1"]) == 0
    text = out.read_text()
    assert text.startswith("# Exported by `mssd export` from study 'grid'")
    cfg = load_config(out)
    assert cfg.train.epochs == 1 and cfg.losses.mssd.gamma in (0.1, 0.01)  # never the non-finite 1.0
    assert main(["train", str(out), "--workdir", str(tmp / "runs")]) == 0
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("smoke").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.metrics["epoch"] == 1.0
    parent = MlflowClient(uri).get_run(trials["0.01"].run_id).data.tags["mlflow.parentRunId"]
    assert [a.path for a in MlflowClient(uri).list_artifacts(parent, "export")] == ["export/best.yaml"]
    assert [a.path for a in MlflowClient(uri).list_artifacts(runs[0].info.run_id, "checkpoints")] == [
        "checkpoints/best.pt"]


def test_eval_prints_the_metrics_of_a_trained_checkpoint(grid_study, capsys):
    from study.cli import main

    summary, uri, trials, tmp = grid_study
    best = next((tmp / "runs" / "train").glob("*/checkpoints/best.pt"))
    capsys.readouterr()
    assert main(["eval", str(tmp / "best.yaml"), "--weights", str(best)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["metric", "value"] and "map" in table and "ap50" in table


def test_report_writes_the_table_and_the_plots_and_skips_importance_with_two_completed_trials(grid_study):
    from mlflow.tracking import MlflowClient

    from study.report import write_report

    summary, uri, trials, tmp = grid_study
    report = write_report(tmp / "runs", "grid")
    names = {p.name for p in report.plots}
    assert names == {"parallel_coordinates.png", "learning_curves.png", "metric_vs_losses_mssd_gamma.png"}
    assert all(p.stat().st_size > 1000 for p in report.plots)
    assert "3 trials" in report.table and "nonfinite" in report.table.splitlines()[0]
    assert len(report.table.splitlines()) == 1 + 2 + 3  # summary, header, every trial
    assert report.notes == ["parameter importance skipped: 2 trials completed; fANOVA needs at least 4 "
                            "(2 per searched parameter, at least 4) to rank 1 parameter"]
    parent = MlflowClient(uri).get_run(trials["0.01"].run_id).data.tags["mlflow.parentRunId"]
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    evidence = {"effects.md", "early_ranking.md"}  # a grid study: factor effects, and the early-ranking check
    assert logged == {f"report/{name}" for name in names | evidence} | {"report/top_trials.txt"}
    assert "losses.mssd.gamma" in (tmp / "runs" / "grid" / "report" / "effects.md").read_text()


def test_resuming_a_finished_study_back_fills_mlflow_from_the_trial_results_without_duplicates(grid_study):
    """What a driver that died while MLflow was down leaves behind: trial results MLflow never got."""
    from mlflow.tracking import MlflowClient

    from study import tracking
    from study.tune import StudyOptions, run_study

    summary, uri, trials, tmp = grid_study
    client = MlflowClient(uri)
    client.delete_run(trials["0.01"].run_id)  # as if this trial's run had never reached MLflow
    # as if the driver had been killed after the trial's last result but before it wrote the trial's end
    for gamma in ("0.1", "1.0"):
        client.set_tag(trials[gamma].run_id, "mssd.status", "running")
        client.update_run(trials[gamma].run_id, status="RUNNING")
    again = run_study(StudyOptions(config="", space="", name="grid", workdir=str(tmp / "runs"), resume=True,
                                   verbose=0))
    assert again.statuses == summary.statuses  # no trial ran again
    now = {r.params["losses.mssd.gamma"]: r for r in tracking.study_trials(uri, "grid")}
    assert sorted(now) == ["0.01", "0.1", "1.0"]
    assert now["0.1"].run_id == trials["0.1"].run_id and now["0.01"].run_id != trials["0.01"].run_id
    assert now["0.01"].status == "completed" and now["1.0"].status == "nonfinite"
    assert now["0.1"].status == "completed"  # the ends of 0.1 and 1.0 written again by the resumed driver
    assert [client.get_run(now[g].run_id).info.status for g in ("0.1", "1.0")] == ["FINISHED", "FAILED"]
    for gamma in ("0.01", "0.1"):
        assert sorted(m.step for m in client.get_metric_history(now[gamma].run_id, "map")) == [1, 2]
