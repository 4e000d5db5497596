"""`mssd ablate`: the Table 2 variants x seeds, tabulated from MLflow."""

from __future__ import annotations

import csv
import math

import pytest
from study_helpers import write_tiny_config

from study.ablation import (
    METRICS,
    VARIANTS,
    ablation_space,
    format_markdown,
    summarise,
    write_outputs,
)
from study.search_space import load_search_space
from study.tracking import TrialRecord


def record(mssd: bool, mad: bool, seed: int, status: str = "completed", **metrics: float) -> TrialRecord:
    params = {"losses.mssd.enabled": str(mssd), "losses.mad.enabled": str(mad), "seed": str(seed)}
    return TrialRecord(run_id=f"r{mssd}{mad}{seed}", trial_id=f"t{seed}", name="", status=status, params=params,
                       metrics=metrics, searched=[], artifact_uri="")


def full_metrics(value: float) -> dict[str, float]:
    return {key: value for key, _ in METRICS}


def test_generated_space_is_the_switches_times_the_seeds(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(ablation_space([5, 6, 7]))
    space = load_search_space(path)
    assert space.is_grid and space.grid_size() == 2 * 2 * 3
    assert set(space.keys) == {"losses.mssd.enabled", "losses.mad.enabled", "seed"}


def test_summary_groups_runs_by_variant_with_mean_and_sample_std():
    records = [
        record(False, False, 0, **full_metrics(0.30)),
        record(False, False, 1, **full_metrics(0.40)),
        record(False, True, 0, **full_metrics(0.50)),
        record(True, False, 0, **full_metrics(0.20)),
        record(True, False, 1, **full_metrics(0.20)),
        record(True, False, 2, status="nonfinite", **full_metrics(0.90)),  # not in the statistics
        record(True, True, 0, **{**full_metrics(0.60), "aps": math.nan}),
    ]
    rows = {r.variant.name: r for r in summarise(records)}
    assert [r.variant for r in summarise(records)] == list(VARIANTS)
    mean, std = rows["baseline"].metrics["map"]
    assert mean == pytest.approx(0.35) and std == pytest.approx(math.sqrt(0.005))  # n - 1 in the denominator
    assert rows["+MAD"].metrics["ap50"] == (pytest.approx(0.5), 0.0)
    assert rows["+MSSD"].runs == 2 and rows["+MSSD"].failed == 1
    assert rows["+MSSD"].metrics["map"] == (pytest.approx(0.2), pytest.approx(0.0))
    assert all(math.isnan(v) for v in rows["+MAD +MSSD"].metrics["aps"])


def test_a_variant_without_runs_shows_not_available_and_one_seed_says_n_1():
    rows = summarise([record(False, False, 0, **full_metrics(0.3))])
    table = format_markdown(rows)
    assert table.count("n/a") == 3 * (len(METRICS) + 1)  # every metric and the delta of the three variants
    assert "| baseline |  |  | 1 | 30.00 (n = 1) |" in table  # not "± 0.00": one seed has no known spread
    assert "Paired deltas" not in table  # no pair, no delta table


def test_each_variant_gets_its_paired_delta_to_the_baseline_seed_by_seed_with_a_95_percent_ci(tmp_path):
    base = {0: 0.30, 1: 0.32, 2: 0.34}
    records = [record(False, False, s, **full_metrics(v)) for s, v in base.items()]
    # +MSSD: 5, 6 and 4 points above the baseline's same seed: mean 5, sd 1, n 3; the 95 % paired t
    # interval is 5 -+ t(0.975, 2) / sqrt(3) = 5 -+ 4.302653 / 1.732051 = [2.52, 7.48]; p = 0.0131.
    records += [record(True, False, s, **full_metrics(base[s] + d)) for s, d in ((0, 0.05), (1, 0.06), (2, 0.04))]
    # +MAD: seed 9 has no baseline run, seed 2 failed: only seeds 0 and 1 pair (-1 and +3 points).
    records += [record(False, True, 0, **full_metrics(0.29)), record(False, True, 1, **full_metrics(0.35)),
                record(False, True, 9, **full_metrics(0.90)), record(False, True, 2, "nonfinite", **full_metrics(0.9))]
    rows = {r.variant.name: r for r in summarise(records)}
    mssd, mad = rows["+MSSD"].deltas["map"], rows["+MAD"].deltas["map"]
    assert (mssd.n, mssd.mean) == (3, pytest.approx(0.05))
    assert (mssd.ci_low, mssd.ci_high) == (pytest.approx(0.025159, abs=1e-6), pytest.approx(0.074841, abs=1e-6))
    assert mssd.p_value == pytest.approx(0.013072, abs=1e-5) and mssd.excludes_zero
    assert (mad.n, mad.mean) == (2, pytest.approx(0.01)) and not mad.excludes_zero
    table = format_markdown(list(rows.values()))
    assert "| +MSSD |  | ✓ | 3 | " in table and "| +5.00 [+2.52, +7.48] * |" in table
    assert "| +MAD | ✓ |  | 3 (+1 failed) | " in table and "| +1.00 [" in table
    assert "+1.00 [-24.41, +26.41] |" in table  # 1 -+ t(0.975, 1) * 2.828 / sqrt(2) = 1 -+ 12.706 * 2
    assert "`*`: the 95 % CI of the paired delta excludes 0" in table
    assert "| +MSSD | mAP | 3 | +5.00 | [+2.52, +7.48] | 0.013 | * |" in table
    assert "| baseline |  |  | 3 | " in table and "| baseline | 0." in table  # the baseline row has no delta
    _, csv_path, _ = write_outputs(list(rows.values()), tmp_path)
    with open(csv_path) as f:
        by_variant = {row["variant"]: row for row in csv.DictReader(f)}
    assert by_variant["+MSSD"]["map_delta_n"] == "3"
    assert float(by_variant["+MSSD"]["map_delta_ci_low"]) == pytest.approx(0.025159, abs=1e-6)
    assert float(by_variant["+MSSD"]["map_delta_p"]) == pytest.approx(0.013072, abs=1e-5)
    assert by_variant["baseline"]["map_delta_n"] == "0" and by_variant["baseline"]["map_delta_mean"] == ""


def test_outputs_are_markdown_csv_and_a_png(tmp_path):
    costs = {v.name: {"params": 1_770_000 + i, "training_params": i, "gflops": 1.0 + i, "training_gflops": 0.01 * i}
             for i, v in enumerate(VARIANTS)}
    records = [record(v.mssd, v.mad, s, **full_metrics(0.1 * (i + 1) + 0.01 * s))
               for i, v in enumerate(VARIANTS) for s in (0, 1)]
    rows = summarise(records, costs)
    md, csv_path, png = write_outputs(rows, tmp_path / "out", title="tiny")
    text = md.read_text()
    assert "| +MAD +MSSD | ✓ | ✓ | 2 | 40.50 ± 0.71 |" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert [row["variant"] for row in table] == [v.name for v in VARIANTS]
    assert float(table[1]["map_mean"]) == pytest.approx(0.205)
    assert int(table[3]["training_params"]) == 3 and float(table[3]["gflops"]) == pytest.approx(4.0)


@pytest.mark.slow
def test_ablate_runs_every_variant_and_seed_on_ray_under_one_parent_run(ray_address, tiny_data, tmp_path):
    from study import tracking
    from study.ablation import AblationOptions, run_ablation

    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    result = run_ablation(AblationOptions(config=str(config), seeds=2, name="abl", workdir=str(tmp_path / "runs"),
                                          backend="ray", address=ray_address, max_concurrent=2, verbose=0))
    assert [r.runs for r in result.rows] == [2, 2, 2, 2]
    uri = tracking.default_tracking_uri(tmp_path / "runs")
    trials = tracking.study_trials(uri, "abl")
    assert len(trials) == 8 and {t.status for t in trials} == {"completed"}
    assert {(t.params["losses.mssd.enabled"], t.params["losses.mad.enabled"], t.params["seed"]) for t in trials} == {
        (m, a, s) for m in ("True", "False") for a in ("True", "False") for s in ("0", "1")}
    # Each variant's first reported metric matches what MLflow holds for its runs.
    baseline = [t.metrics["map"] for t in trials if t.params["losses.mssd.enabled"] == "False"
                and t.params["losses.mad.enabled"] == "False"]
    assert result.rows[0].metrics["map"][0] == pytest.approx(sum(baseline) / 2)
    # Ray's trials log their seed: each variant pairs both seeds with the baseline's.
    assert [r.deltas["map"].n for r in result.rows] == [0, 2, 2, 2]
    # Training-only parameters: none for the baseline, adapters for +MAD, projectors for +MSSD.
    extra = [r.training_params for r in result.rows]
    assert extra[0] == 0 and extra[1] > 0 and extra[2] > 0 and extra[3] == extra[1] + extra[2]
    for path in result.files:
        assert path.is_file() and path.parent == result.folder / "ablation"
    parent = tracking.parent_run_id(uri, "abl")
    artifacts = tracking.download_artifact(uri, parent, "ablation", tmp_path / "dl")
    assert {p.name for p in artifacts.iterdir()} == {"ablation.md", "ablation.csv", "ablation.png"}


@pytest.mark.slow
def test_local_backend_runs_the_four_variants_in_process_under_one_parent_run(tiny_data, tmp_path):
    from study import tracking
    from study.ablation import AblationOptions, run_ablation

    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    result = run_ablation(AblationOptions(config=str(config), seeds=1, name="abl-local",
                                          workdir=str(tmp_path / "runs"), backend="local"))
    assert result.backend == "local" and [r.runs for r in result.rows] == [1, 1, 1, 1]
    uri = tracking.default_tracking_uri(tmp_path / "runs")
    trials = tracking.study_trials(uri, "abl-local")
    assert sorted(t.trial_id for t in trials) == ["baseline-seed0", "mad-mssd-seed0", "mad-seed0", "mssd-seed0"]
    assert all(t.status == "completed" and "map" in t.metrics for t in trials)
    assert (result.folder / "ablation" / "ablation.csv").is_file()
    assert [r.deltas["map"].n for r in result.rows] == [0, 1, 1, 1]  # one seed: a delta, no interval
    assert "(n = 1)" in result.markdown
