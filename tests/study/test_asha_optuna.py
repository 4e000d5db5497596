"""A sampled study: Optuna's TPE proposes, ASHA stops, and each side is told the truth.

The metric is ``loss/total`` (mode min) because the seconds-long trials' mAP is 0 for every trial,
and ASHA cannot rank ties.
"""

from __future__ import annotations

import re

import pytest
from study_helpers import SPACES, write_tiny_config

pytestmark = pytest.mark.slow


def test_asha_stops_trials_and_optuna_records_them_as_pruned_not_complete(ray_address, tiny_data, tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient

    from study import tracking
    from study.tune import StudyOptions, run_study

    config = write_tiny_config(tmp_path, tiny_data, epochs=3)
    summary = run_study(StudyOptions(
        config=str(config), space=str(SPACES / "mssd.yaml"), name="sampled", workdir=str(tmp_path / "runs"),
        samples=6, max_concurrent=2, metric="loss/total", mode="min", grace_period=1, reduction_factor=2,
        seed=3, verbose=0))
    records = tracking.study_trials(tracking.default_tracking_uri(tmp_path / "runs"), "sampled")
    assert len(records) == 6 and sum(summary.statuses.values()) == 6
    by_status = {r.trial_id: r.status for r in records}
    assert "early_stopped" in by_status.values() and "completed" in by_status.values()
    # In the MLflow UI: ASHA-stopped runs end KILLED (not "Finished"), runs are named after the trial's values.
    client = MlflowClient(tracking.default_tracking_uri(tmp_path / "runs"))
    run_status = {"completed": "FINISHED", "early_stopped": "KILLED"}
    for r in records:
        assert client.get_run(r.run_id).info.status == run_status[r.status], r
        gamma = float(r.params["losses.mssd.gamma"])
        assert re.fullmatch(rf"t\d\d gamma={gamma:.3g} sigma2=\S+ w_m=\S+ w_l=\S+ lambda_distill=\S+ "
                            r"lambda_mask=\S+", r.name), r.name
    for r in records:  # every searched key was sampled within its bounds and logged
        assert 1e-3 <= float(r.params["losses.mssd.gamma"]) <= 1.0
        assert r.metrics["epoch"] == (3.0 if r.status == "completed" else r.metrics["epoch"])

    study = optuna.load_study(study_name="sampled", storage=f"sqlite:///{tmp_path / 'runs' / 'sampled' / 'optuna.db'}")
    states = sorted(t.state.name for t in study.trials)
    counts = {s: states.count(s) for s in set(states)}
    assert counts.get("COMPLETE", 0) == list(by_status.values()).count("completed")
    assert counts.get("PRUNED", 0) == list(by_status.values()).count("early_stopped")
    # optuna-dashboard: the objective is named after the metric; each trial names its Ray trial and MLflow run.
    assert study.metric_names == ["loss/total"]
    run_ids = {r.trial_id: r.run_id for r in records}
    assert {t.user_attrs["ray_trial_id"]: t.user_attrs["mlflow_run_id"] for t in study.trials} == run_ids
    for t in study.trials:
        assert t.intermediate_values  # every evaluated epoch reached Optuna at step = epoch
        if t.state.name == "PRUNED":
            # Optuna stores a pruned trial's last intermediate value as its value; TPE still ranks it
            # by (epochs reached, value) below every COMPLETE trial.
            assert max(t.intermediate_values) < 3
        else:
            assert t.value == pytest.approx(t.intermediate_values[3])
