"""One best trial everywhere: `mssd tune`'s summary line, the parent run's `mssd.best_trial` tag,
`mssd export` and `mssd report` rank with `study.export.rank_trials`, ties going to the earlier trial,
and they name it `t00`, not by Ray's hash. `mssd report` prints each failed trial's error line, and a
successful sweep's stderr carries no traceback from Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from study_helpers import REPO, write_space, write_tiny_config


def _record(name: str, status: str, value: float | None, trial_id: str = ""):
    from study.tracking import TrialRecord

    metrics = {} if value is None else {"map": value}
    return TrialRecord(run_id=f"run-{name}", trial_id=trial_id or f"hash_{name}", name=f"{name} gamma=0.1",
                       status=status, params={}, metrics=metrics, searched=[], artifact_uri="")


def test_equal_values_go_to_the_earlier_trial_whatever_the_order_given():
    from study.export import rank_trials

    records = [_record("t07", "completed", 0.5), _record("t02", "completed", 0.5), _record("t03", "completed", 0.4)]
    assert [r.name[:3] for r in rank_trials(records, "map", "max")] == ["t02", "t07", "t03"]
    assert [r.name[:3] for r in rank_trials(records, "map", "min")] == ["t03", "t02", "t07"]


def test_trial_numbers_compare_as_numbers_not_text():
    from study.export import rank_trials

    records = [_record("t100", "completed", 1.0), _record("t20", "completed", 1.0)]
    assert rank_trials(records, "map", "max")[0].name.startswith("t20 ")


def test_the_parent_summary_picks_the_trial_export_ranks_first():
    from study.export import rank_trials
    from study.tracking.study_summary import _best

    records = [_record("t01", "completed", 0.5), _record("t00", "completed", 0.5), _record("t02", "early_stopped", 0.9)]

    def run(r, start):  # an MLflow run as the search returns it, newest first
        tags = {"mssd.status": r.status, "mssd.trial_id": r.trial_id}
        return SimpleNamespace(info=SimpleNamespace(run_id=r.run_id, run_name=r.name, start_time=start,
                                                    artifact_uri=""),
                               data=SimpleNamespace(tags=tags, params={}, metrics=r.metrics))

    runs = [run(r, start=int(r.name[1:3])) for r in sorted(records, key=lambda r: r.name, reverse=True)]
    assert _best(runs, "map", "max").info.run_id == rank_trials(records, "map", "max")[0].run_id == "run-t00"


def test_the_errors_section_prints_each_failed_trials_error_line():
    from study.report import errors_section

    records = [_record("t00", "completed", 0.5), _record("t01", "error", None), _record("t02", "nonfinite", None)]
    records[1].error = "data: /x/000003.png: image file is truncated"
    records[2].error = "non-finite loss at epoch 1, step 1: loss/gt is nan"
    assert errors_section(records).splitlines() == [
        "errors:", "  t01  data: /x/000003.png: image file is truncated",
        "  t02  non-finite loss at epoch 1, step 1: loss/gt is nan"]
    assert errors_section(records[:1]) == ""


def _mssd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from study.cli import main; sys.exit(main())", *args]


@pytest.mark.slow
def test_a_tied_sweep_names_one_best_trial_in_summary_tag_export_and_report(ray_address, tiny_data, tmp_path):
    """Every completed trial ties on `--metric epoch` (1 epoch each); the third goes non-finite."""
    from mlflow.tracking import MlflowClient

    from study import tracking

    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    space = write_space(tmp_path, "params:\n  losses.mssd.gamma: {distribution: grid, values: [0.1, 0.2, 0.3]}\n")
    workdir = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MSSD_INJECT_FAULT": "nonfinite@1:losses.mssd.gamma=0.3"}
    tune = subprocess.run(_mssd("tune", str(config), "--space", str(space), "--workdir", str(workdir), "--name", "tie",
                                "--address", ray_address, "--quiet", "--no-asha", "--metric", "epoch"),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert tune.returncode == 0, tune.stdout[-2000:] + tune.stderr[-2000:]
    assert "best trial t00: epoch 1" in tune.stdout, tune.stdout
    assert "Traceback" not in tune.stderr and "failed with exception" not in tune.stderr, tune.stderr

    uri = tracking.default_tracking_uri(workdir)
    parent = MlflowClient(uri).get_run(tracking.parent_run_id(uri, "tie"))
    assert parent.data.tags["mssd.best_trial"].startswith("t00 ")

    export = subprocess.run(_mssd("export", "tie", "--workdir", str(workdir), "--out", str(tmp_path / "best.yaml")),
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert export.returncode == 0 and "(trial t00, run" in export.stdout, export.stdout + export.stderr

    report = subprocess.run(_mssd("report", "tie", "--workdir", str(workdir)), cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    lines = report.stdout.splitlines()
    first = lines[lines.index(next(x for x in lines if x.startswith("#  trial"))) + 2]  # header, rule, row 1
    assert first.split()[:2] == ["1", "t00"], report.stdout
    errors = lines[lines.index("errors:") + 1:]
    assert errors[0].startswith("  t02  ") and "loss/total is nan" in errors[0], report.stdout
