"""The confirmation's verdict and files from fixed per-seed numbers (no training): which configuration is
the confirmed best, how the table reads, and the plan's pure pieces (seeds, the baseline's switches)."""

from __future__ import annotations

import csv

import pytest
from study_helpers import REPO

from study.confirm_record import BASELINE
from study.confirm_table import ArmRuns, format_markdown, summarise, write_outputs

SEEDS = [10, 11, 12]


def arm(label: str, maps: list[float], failed: tuple[int, ...] = ()) -> ArmRuns:
    return ArmRuns(label, {s: {"map": v, "ap50": 2 * v} for s, v in zip(SEEDS, maps, strict=True) if s not in failed},
                   list(failed))


def configuration(label: str, baseline: str = BASELINE, **values) -> dict:
    return {"label": label, "baseline": baseline, "values": values or {"losses.mssd.gamma": 0.05},
            "search_value": 0.3}


ARMS = {
    BASELINE: arm(BASELINE, [0.250, 0.260, 0.240]),
    "t03": arm("t03", [0.262, 0.271, 0.252]),  # +1.17 points on every seed, tight: beats the baseline
    "t05": arm("t05", [0.300, 0.250, 0.230]),  # +1.0 on average but noisy: its interval contains 0
    "t07": arm("t07", [0.270, 0.276, 0.258]),  # +1.8, tight: the best of those that beat it
    "t09": arm("t09", [0.200, 0.210, 0.190]),  # -5, tight: worse beyond noise
}


def test_the_confirmed_best_is_the_largest_mean_delta_among_intervals_above_zero():
    c = summarise("s", "map", "max", SEEDS, [0], [configuration(k) for k in ("t05", "t03", "t07", "t09")], ARMS)
    beats = {r.label: r.summaries["map"].ci_low > 0 for r in c.rows}
    assert beats == {"t05": False, "t03": True, "t07": True, "t09": False}
    assert c.best == "t07"
    assert c.best_row.summaries["map"].mean == pytest.approx(0.018)


def test_a_noisy_lead_and_a_significant_loss_leave_the_baseline_best():
    c = summarise("s", "map", "max", SEEDS, [0], [configuration("t05"), configuration("t09")], ARMS)
    assert c.best == BASELINE and c.best_row is None
    assert c.rows[1].summaries["map"].excludes_zero  # worse beyond noise is not "better"
    assert "no configuration beats the baseline beyond seed noise" in format_markdown(c).lower()


def test_a_metric_to_minimise_is_beaten_by_intervals_below_zero():
    c = summarise("s", "map", "min", SEEDS, [0], [configuration("t03"), configuration("t09")], ARMS)
    assert c.best == "t09"


def test_only_seeds_both_arms_completed_are_paired():
    arms = {BASELINE: arm(BASELINE, [0.25, 0.26, 0.24], failed=(12,)), "t03": arm("t03", [0.26, 0.27, 0.25])}
    c = summarise("s", "map", "max", SEEDS, [0], [configuration("t03")], arms)
    assert sorted(c.rows[0].deltas["map"]) == [10, 11] and c.rows[0].summaries["map"].n == 2
    assert "baseline seed 12" in format_markdown(c)


def test_the_table_reads_delta_interval_p_and_per_seed_values_in_points():
    c = summarise("s", "map", "max", SEEDS, [0, 1], [configuration("t03")], ARMS)
    md = format_markdown(c, "title")
    row = next(line for line in md.splitlines() if line.startswith("| t03 "))
    assert "| gamma=0.05 | 30.00 | baseline | 25.00 ± 1.00 | 26.17 ± 0.95 | +1.17 [+1.02, +1.31] |" in row
    assert row.rstrip().endswith("| 3 | ✓ |")
    assert "| 10 | 25.00 | 26.20 |" in md
    assert "Confirmed best: t03 (gamma=0.05), map delta +1.17 [+1.02, +1.31]" in md


def test_outputs_are_the_table_the_summary_csv_the_seed_csv_and_an_interval_plot(tmp_path):
    arms = {k: ARMS[k] for k in (BASELINE, "t03", "t05")}
    c = summarise("s", "map", "max", SEEDS, [0], [configuration("t03"), configuration("t05")], arms)
    files = write_outputs(c, tmp_path)
    assert [f.name for f in files] == ["confirm.md", "confirm.csv", "confirm-seeds.csv", "confirm.png"]
    rows = list(csv.DictReader(files[1].read_text().splitlines()))
    first = rows[0]
    assert (first["configuration"], first["metric"], first["beats_baseline"], first["confirmed_best"]) == (
        "t03", "map", "True", "True")
    assert float(first["ci_low"]) == pytest.approx(c.rows[0].summaries["map"].ci_low, rel=1e-5)
    seeds = list(csv.DictReader(files[2].read_text().splitlines()))
    assert len(seeds) == 3 * 3 and {r["status"] for r in seeds} == {"completed"}
    assert files[3].read_bytes()[:4] == b"\x89PNG"


def test_seeds_are_a_count_or_a_list_and_fewer_than_two_are_refused():
    from detectors.errors import ConfigError
    from study.confirm import parse_seeds

    assert parse_seeds("5") == 5 and parse_seeds("12,10") == [12, 10] and parse_seeds(3) == 3
    for bad in ("1", "7,", "a", "3,3", "-1,2"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_the_baseline_turns_the_method_off_and_keeps_the_recipe():
    from study.config import load_config
    from study.confirm import baseline_config

    base = load_config(REPO / "configs" / "smoke.yaml")
    plain = baseline_config(base, {"losses.mssd.gamma": 0.5, "losses.lambda_mask": 0.1})
    assert not plain.losses.mssd.enabled and not plain.losses.mad.enabled
    assert plain.losses.mssd.gamma == base.losses.mssd.gamma  # the method's own settings are not the baseline's
    assert baseline_config(base, {"losses.mssd.gamma": 0.01}) == plain  # so trials share one baseline
    recipe = baseline_config(base, {"losses.mssd.gamma": 0.5, "train.lr0": 0.02})
    assert recipe.train.lr0 == 0.02 and not recipe.losses.mssd.enabled
    kd = baseline_config(load_config(REPO / "configs" / "smoke.yaml", ["losses.method=kd"]), {})
    assert kd.losses.method == "none"


@pytest.mark.parametrize(("flags", "expected"), [(["--confirm", "0"], "--confirm: expected at least 1, got 0"),
                                                 (["--confirm", "2", "--confirm-seeds", "1"],
                                                  "--confirm-seeds: expected at least 2 seeds")])
def test_tune_refuses_a_bad_confirm_request_before_the_sweep_starts(tmp_path, capsys, flags, expected):
    from study.cli import main

    workdir = tmp_path / "runs"
    code = main(["tune", str(REPO / "configs" / "smoke.yaml"), "--space", str(REPO / "search_spaces" / "mssd.yaml"),
                 "--workdir", str(workdir), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and "\n" not in err
    assert not workdir.exists()
