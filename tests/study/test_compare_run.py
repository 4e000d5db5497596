"""`mssd compare` end to end: the teacher trained first, then every method on real Ray under one MLflow parent run."""

from __future__ import annotations

import csv
import shutil

import pytest
from study_helpers import write_tiny_config


@pytest.mark.slow
def test_compare_trains_the_teacher_then_every_method_on_ray_under_one_parent_run(ray_address, tiny_data, tmp_path,
                                                                                  capsys):
    from study import tracking
    from study.cli import main

    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    workdir = tmp_path / "runs"
    # The smallest teacher keeps the test short; any zoo detector at the student's strides would do.
    assert main(["compare", str(config), "--methods", "baseline,kd", "--seeds", "1", "--name", "cmp",
                 "--workdir", str(workdir), "--backend", "ray", "--address", ray_address, "--max-concurrent", "2",
                 "--quiet", "--set", "distill.teacher.name=yolov5n"]) == 0
    out = capsys.readouterr().out
    uri = tracking.default_tracking_uri(workdir)
    parent = tracking.parent_run_id(uri, "cmp")
    from study.tracking.store import client, search_all

    children = search_all(client(uri), tracking.experiment_id(uri, "cmp"), f"tags.`mlflow.parentRunId` = '{parent}'")
    teacher = [r for r in children if r.data.tags.get("mssd.role") == "teacher"]
    assert len(teacher) == 1 and teacher[0].info.status == "FINISHED"
    # The teacher trained at the students' budget, without a method of its own.
    assert teacher[0].data.params["detector.name"] == "yolov5n" and teacher[0].data.params["losses.method"] == "none"
    assert teacher[0].data.params["train.max_steps_per_epoch"] == "2"
    best = workdir.resolve() / "cmp" / "teacher" / "checkpoints" / "best.pt"
    assert best.is_file() and f"Teacher: yolov5n (trained first by this command: {best})" in out

    trials = tracking.study_trials(uri, "cmp")  # the teacher is not a trial
    assert sorted(t.params["losses.method"] for t in trials) == ["kd", "none"]
    assert {t.status for t in trials} == {"completed"}
    assert {t.params["distill.teacher.weights"] for t in trials} == {str(best)}
    kd = next(t for t in trials if t.params["losses.method"] == "kd")
    assert "loss/kd" in kd.metrics  # the method's own loss was logged

    with open(workdir / "cmp" / "compare" / "compare.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["baseline", "kd"] and all(r["runs"] == "1" for r in rows.values())
    assert float(rows["kd"]["map_mean"]) == pytest.approx(kd.metrics["map"], abs=1e-6)
    assert rows["kd"]["teacher"] == "yolov5n" and float(rows["kd"]["teacher_gflops"]) > 0
    assert int(rows["kd"]["training_params"]) > 0 and int(rows["baseline"]["training_params"]) == 0
    assert float(rows["baseline"]["step_time_ratio"]) == pytest.approx(1.0)
    artifacts = tracking.download_artifact(uri, parent, "compare", tmp_path / "dl")
    assert {p.name for p in artifacts.iterdir()} == {"compare.md", "compare.csv", "compare.png"}

    # The folder gone, the name is still taken in MLflow: refused in one line before anything is written.
    shutil.rmtree(workdir / "cmp")
    assert main(["compare", str(config), "--methods", "baseline", "--seeds", "1", "--name", "cmp", "--workdir",
                 str(workdir), "--backend", "ray", "--address", ray_address]) == 2
    assert capsys.readouterr().err.strip().endswith("already has a study 'cmp'; pass another --name")
    assert not (workdir / "cmp").exists() and len(tracking.study_trials(uri, "cmp")) == 2
