"""What a study looks like in the MLflow UI, as data (study.mlflow_view); the browser test checks the page."""

from __future__ import annotations

import json


def test_trial_runs_are_named_after_the_trial_and_its_searched_values():
    from study.mlflow_view import trial_run_name

    params = {"losses.mssd.gamma": 0.05, "losses.mad.sigma2": 2.0, "train.lr0": 0.01}
    searched = ["losses.mssd.gamma", "losses.mad.sigma2"]
    assert trial_run_name("1d527_00007", 3, params, searched) == "t07 gamma=0.05 sigma2=2"  # Ray's counter
    assert trial_run_name("c0bca883", 3, params, searched) == "t03 gamma=0.05 sigma2=2"  # start order
    assert trial_run_name("c0bca883", 12, {"losses.mssd.gamma": 0.012345678}, searched[:1]) == "t12 gamma=0.0123"


def test_parameter_names_are_shortened_only_as_far_as_they_stay_unambiguous():
    from study.mlflow_view import short_name

    keys = ["losses.mssd.gamma", "losses.mssd.w_m", "detector.w_m", "train.lr0"]
    assert short_name("losses.mssd.gamma", keys) == "gamma"
    assert short_name("losses.mssd.w_m", keys) == "mssd.w_m"
    assert short_name("detector.w_m", keys) == "detector.w_m"


def test_the_experiment_is_a_model_training_one_that_opens_on_the_trials_view():
    from study.mlflow_view import experiment_tags, study_url

    tags = experiment_tags("map", "max", ["losses.mssd.gamma", "losses.mad.sigma2"])
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags["mlflow.sharedViewState.mssd-trials"])
    assert view["orderByKey"] == "metrics.`map`" and view["orderByAsc"] is False  # best first, trials flat
    assert view["selectedColumns"][:4] == ["attributes.`Run Name`", "metrics.`map`", "params.`losses.mssd.gamma`",
                                           "params.`losses.mad.sigma2`"]
    assert "tags.`mssd.status`" in view["selectedColumns"]
    charts = {c["type"] for c in view["compareRunCharts"]}
    assert charts == {"LINE", "PARALLEL", "SCATTER"}
    assert json.loads(experiment_tags("loss/total", "min", ["x.y"])["mlflow.sharedViewState.mssd-trials"])[
        "orderByAsc"] is True
    assert study_url("http://127.0.0.1:5000", "4") == (
        "http://127.0.0.1:5000/#/experiments/4/runs?workflowType=machine_learning&viewStateShareKey=mssd-trials")


def test_mssd_ui_without_a_study_can_link_every_model_training_experiment(tmp_path):
    from study import tracking
    from study.mlflow_view import experiment_tags, training_experiment_tags
    from study.tracking.store import client, ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_client = client(uri)
    study = ensure_experiment(mlflow_client, uri, "sweep", tmp_path, experiment_tags("map", "max", ["a.b"]))
    train = ensure_experiment(mlflow_client, uri, "smoke", tmp_path, training_experiment_tags())
    ensure_experiment(mlflow_client, uri, "someone-elses", tmp_path)
    assert sorted(tracking.model_training_experiments(uri)) == [("smoke", train, False), ("sweep", study, True)]


def test_every_study_tracker_makes_a_model_training_experiment(tmp_path):
    """Sweeps pass their trials view; other studies (ablation, reproduce) still get the model-training kind."""
    from mlflow.tracking import MlflowClient

    from study import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = tracking.StudyTracker(uri, "ablation-x", staging_dir=tmp_path / "staging", artifact_root=tmp_path)
    tracker.start()
    tracker.flush(30)
    tags = MlflowClient(uri).get_experiment_by_name("ablation-x").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert not any(k.startswith("mlflow.sharedViewState.") for k in tags)
