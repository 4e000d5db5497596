"""``mssd confirm`` on a real tiny study: ``mssd tune --confirm 1 --confirm-seeds 2`` on the session's Ray
(two gamma trials, one epoch), then what it wrote, what MLflow holds, export's provenance, a second run
that trains nothing, a longer seed list that trains only the new seeds, and every refusal (one line,
rc 2, nothing written)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from study_helpers import write_space, write_tiny_config

pytestmark = pytest.mark.slow

GRID = "params:\n  losses.mssd.gamma: {distribution: grid, values: [0.1, 0.01]}\n"


@pytest.fixture(scope="module")
def study(ray_address, tiny_data, tmp_path_factory):
    """A finished 2-trial study confirmed by ``mssd tune --confirm 1 --confirm-seeds 2`` (seeds 1, 2)."""
    from study.cli import main

    tmp = tmp_path_factory.mktemp("confirm")
    config = write_tiny_config(tmp, tiny_data, epochs=1)
    space = write_space(tmp, GRID)
    workdir = tmp / "runs"
    assert main(["tune", str(config), "--space", str(space), "--workdir", str(workdir), "--name", "s", "--no-asha",
                 "--address", ray_address, "--quiet", "--confirm", "1", "--confirm-seeds", "2"]) == 0
    return workdir


def _ranked(workdir):
    """The search's trials best first, by the rule export and confirm share."""
    from study import tracking
    from study.export import rank_trials

    return rank_trials(tracking.study_trials(_uri(workdir), "s"), "map", "max")


def _top(workdir) -> tuple[str, str]:
    """(label, gamma) of the search's best trial: t00 or t01, whichever the tiny runs ranked first."""
    best = _ranked(workdir)[0]
    return best.name.split()[0], best.params["losses.mssd.gamma"]


def _uri(workdir):
    from study import tracking

    return tracking.default_tracking_uri(workdir)


def _parent(workdir, name="s"):
    from mlflow.tracking import MlflowClient

    from study import tracking

    client = MlflowClient(_uri(workdir))
    return client, client.get_run(tracking.parent_run_id(_uri(workdir), name))


def _snapshot(workdir):
    """Every file with its size and mtime, and every MLflow run: what a refusal must leave as it was."""
    from mlflow.tracking import MlflowClient

    files = {str(p.relative_to(workdir)): (p.stat().st_size, p.stat().st_mtime_ns)
             for p in workdir.rglob("*") if p.is_file() and p.name != "mlflow.db"}
    client = MlflowClient(_uri(workdir))
    experiments = client.search_experiments()
    runs = {(r.info.run_id, r.info.status, tuple(sorted(r.data.tags.items())))
            for r in client.search_runs([e.experiment_id for e in experiments], max_results=1000)}
    return files, {e.name for e in experiments}, runs


def _refused(capsys, argv):
    from study.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("mssd: error: "), err
    return err


def test_tune_confirm_writes_the_table_csv_plot_and_record_into_the_study_folder(study):
    folder = study / "s" / "confirm"
    assert {p.name for p in folder.iterdir()} >= {"confirm.md", "confirm.csv", "confirm-seeds.csv", "confirm.png",
                                                   "confirm.json"}
    record = json.loads((folder / "confirm.json").read_text())
    assert record["seeds"] == [1, 2] and record["metric"] == "map"
    label, gamma = _top(study)
    md = (folder / "confirm.md").read_text()
    assert f"| {label} | gamma={float(gamma):.3g} |" in md and "fresh seeds 1, 2" in md
    rows = list(csv.DictReader((folder / "confirm.csv").read_text().splitlines()))
    assert [r["metric"] for r in rows][:1] == ["map"] and {r["configuration"] for r in rows} == {label}
    assert rows[0]["n"] == "2"  # both seeds paired (APs etc. may have no ground truth on a tiny set: NaN, unpaired)
    seeds = list(csv.DictReader((folder / "confirm-seeds.csv").read_text().splitlines()))
    assert sorted((r["arm"], r["seed"], r["status"]) for r in seeds) == [
        ("baseline", "1", "completed"), ("baseline", "2", "completed"), (label, "1", "completed"),
        (label, "2", "completed")]
    assert (folder / "confirm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_arm_ran_on_the_fresh_seeds_with_the_baseline_method_off(study):
    from study import tracking

    label, gamma = _top(study)
    baseline = tracking.study_trials(_uri(study), "s-confirm-baseline")
    trial = tracking.study_trials(_uri(study), f"s-confirm-{label}")
    assert sorted(r.params["seed"] for r in baseline) == sorted(r.params["seed"] for r in trial) == ["1", "2"]
    assert all(r.status == "completed" for r in baseline + trial)
    assert {(r.params["losses.mssd.enabled"], r.params["losses.mad.enabled"]) for r in baseline} == {("False",
                                                                                                      "False")}
    assert {(r.params["losses.mssd.enabled"], r.params["losses.mssd.gamma"]) for r in trial} == {("True", gamma)}


def test_the_verdict_is_tagged_and_the_files_logged_on_the_study_parent_run(study):
    client, parent = _parent(study)
    tags = parent.data.tags
    record = json.loads((study / "s" / "confirm" / "confirm.json").read_text())
    assert tags["mssd.confirm.best"] == record["best"] and tags["mssd.confirm.seeds"] == "1,2"
    if record["best"] == "baseline":
        assert tags["mssd.confirm.best_delta"] == tags["mssd.confirm.ci_low"] == "none"
    else:
        assert float(tags["mssd.confirm.ci_low"]) > 0
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "confirm")}
    assert {"confirm/confirm.md", "confirm/confirm.csv", "confirm/confirm.png", "confirm/confirm.json"} <= logged


def test_running_the_same_confirmation_again_trains_nothing(study):
    from study.confirm import ConfirmOptions, run_confirm
    from study.grid_runs import GridOptions

    before = {e for e in _snapshot(study)[1]}
    result = run_confirm(ConfirmOptions("s", top=1, seeds=2, workdir=str(study), grid=GridOptions("local")))
    assert result.trained == 0 and _snapshot(study)[1] == before
    assert result.confirmation.seeds == [1, 2] and result.confirmation.rows[0].summaries["map"].n == 2


def test_export_takes_the_confirmation_first_and_says_which_provenance(study, tmp_path):
    from study.config import load_config
    from study.confirm_record import ConfirmRecord, read_record, record_path, write_record
    from study.export import export_best_configs

    folder = study / "s"
    saved = record_path(folder).read_text()
    record = read_record(folder)
    try:
        first = export_best_configs(study, "s", tmp_path / "a.yaml")[0]
        text = (tmp_path / "a.yaml").read_text()
        if record.baseline_wins:
            assert first.trial == "baseline" and "no configuration beats the baseline beyond seed noise" in text
            exported = load_config(tmp_path / "a.yaml")  # the exported run is the baseline: the method off
            assert not exported.losses.mssd.enabled and not exported.losses.mad.enabled
        else:
            assert first.run_id == record.run_id and "confirmed on seeds 1, 2" in text

        # A confirmation naming the search's second trial puts it first, with its interval.
        second = _ranked(study)[1]
        gamma = float(second.params["losses.mssd.gamma"])
        write_record(folder, ConfirmRecord("s", second.name.split()[0], "map", "max", [1, 2], second.trial_id,
                                           second.run_id, {"losses.mssd.gamma": gamma}, delta=0.012, ci_low=0.004,
                                           ci_high=0.02))
        first = export_best_configs(study, "s", tmp_path / "b.yaml")[0]
        text = (tmp_path / "b.yaml").read_text()
        assert first.run_id == second.run_id
        assert "confirmed on seeds 1, 2: delta map +1.20 [+0.40, +2.00]" in text and f"gamma: {gamma}" in text

        record_path(folder).unlink()  # no confirmation: the search's best, said to be unconfirmed
        export_best_configs(study, "s", tmp_path / "c.yaml")
        assert "best single-seed search trial, not confirmed on fresh seeds" in (tmp_path / "c.yaml").read_text()
    finally:
        record_path(folder).write_text(saved)


def test_a_longer_seed_list_trains_only_the_new_seeds(study):
    from study.confirm import ConfirmOptions, run_confirm
    from study.grid_runs import GridOptions

    result = run_confirm(ConfirmOptions("s", top=1, seeds="1,2,3", workdir=str(study), grid=GridOptions("local")))
    assert result.trained == 2  # seed 3 of the baseline and of the top trial
    assert result.confirmation.rows[0].summaries["map"].n == 3
    _, parent = _parent(study)
    assert parent.data.tags["mssd.confirm.seeds"] == "1,2,3"


def test_an_arm_left_unfinished_stops_the_confirmation_before_any_verdict(study, monkeypatch):
    """Tune stops quietly on Ctrl-C: a seed still unfinished after its arm ran must not reach the tables."""
    import study.confirm as confirm
    from detectors.errors import MSSDError
    from study.grid_runs import GridOptions

    monkeypatch.setattr(confirm, "_train_seeds", lambda *args: None)  # an arm interrupted before any run ended
    before = _snapshot(study)[0]
    with pytest.raises(MSSDError, match=r"did not finish seed\(s\) 4 \(interrupted\?\); run the same command again"):
        confirm.run_confirm(confirm.ConfirmOptions("s", top=1, seeds="1,2,3,4", workdir=str(study),
                                                   grid=GridOptions("local")))
    assert _snapshot(study)[0] == before  # confirm.md, .csv, .json untouched


@pytest.mark.parametrize(("argv", "expected"), [
    (["confirm", "nope"], "no study 'nope'"),
    (["confirm", "s", "--top", "0"], "--top: expected at least 1, got 0"),
    (["confirm", "s", "--seeds", "1"], "--seeds: expected at least 2 seeds"),
    (["confirm", "s", "--seeds", "7,0"], "--seeds: seed 0 was used by the search of study 's'"),
    (["confirm", "s", "--seeds", "a,b"], "--seeds: expected a number of fresh seeds"),
])
def test_bad_arguments_are_refused_in_one_line_and_nothing_is_written(study, capsys, argv, expected):
    before = _snapshot(study)
    err = _refused(capsys, [*argv, "--workdir", str(study), "--backend", "local"])
    assert expected in err
    assert _snapshot(study) == before


def test_a_study_still_marked_running_is_refused(study, capsys):
    client, parent = _parent(study)
    client.update_run(parent.info.run_id, status="RUNNING")
    try:
        before = _snapshot(study)
        err = _refused(capsys, ["confirm", "s", "--workdir", str(study), "--backend", "local"])
        assert "still marked running" in err and _snapshot(study) == before
    finally:
        client.update_run(parent.info.run_id, status="FINISHED")


def test_a_study_without_a_completed_trial_is_refused(study, capsys):
    from mlflow.tracking import MlflowClient

    from study import tracking

    client = MlflowClient(_uri(study))
    trials = tracking.study_trials(_uri(study), "s")
    for t in trials:
        client.set_tag(t.run_id, "mssd.status", "nonfinite")
    try:
        before = _snapshot(study)
        err = _refused(capsys, ["confirm", "s", "--workdir", str(study), "--backend", "local"])
        assert "has no completed trial" in err and _snapshot(study) == before
    finally:
        for t in trials:
            client.set_tag(t.run_id, "mssd.status", t.status)


def test_a_copied_study_is_refused_and_neither_copy_changes(study, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = tmp_path / "elsewhere" / "runs"
    shutil.copytree(study, copy)
    before, before_copy = _snapshot(study), _snapshot(copy)
    err = _refused(capsys, ["confirm", "s", "--workdir", str(copy), "--backend", "local"])
    assert "moved or copied" in err
    assert _snapshot(study) == before and _snapshot(copy) == before_copy
