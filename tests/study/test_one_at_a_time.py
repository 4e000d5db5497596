"""Screening designs: ``design: one_at_a_time`` runs the reference and each value alone, crossed with the
seeds, and the report pairs every variant with the reference on the same seed."""

from __future__ import annotations

import pytest
from study_helpers import write_space, write_tiny_config

from detectors.errors import ConfigError
from study.report_evidence import factor_effects
from study.search_space import POINT_KEY, apply_params, load_search_space

SCREEN = """design: one_at_a_time
params:
  seed: {distribution: grid, values: [1, 2], crossed: true}
  losses.mssd.gamma: {distribution: grid, values: [0.05, 0.5, 1.0]}
  losses.mad.coordinates: {distribution: grid, values: [box_normalised, pixels]}
"""


def test_points_are_the_reference_then_each_value_alone_crossed_with_every_seed(tmp_path):
    space = load_search_space(write_space(tmp_path, SCREEN))
    points = space.design_points()
    assert space.grid_size() == len(points) == (1 + 2 + 1) * 2  # not 3 * 2 * 2 = 12
    assert [p["label"] for p in points[:4]] == ["reference seed=1", "reference seed=2",
                                                 "gamma=0.5 seed=1", "gamma=0.5 seed=2"]
    for point in points:  # at most one varied param off its reference
        off = [k for k, ref in (("losses.mssd.gamma", 0.05), ("losses.mad.coordinates", "box_normalised"))
               if point["params"][k] != ref]
        assert len(off) <= 1
    assert space.varied_keys == ["losses.mssd.gamma", "losses.mad.coordinates"]


def test_a_trial_config_holding_a_design_point_applies_its_params():
    point = {"params": {"seed": 2, "losses.mssd.gamma": 0.5}, "label": "gamma=0.5 seed=2"}
    cfg = apply_params({"seed": 0, "losses": {"mssd": {"gamma": 0.05}}}, {POINT_KEY: point})
    assert cfg == {"seed": 2, "losses": {"mssd": {"gamma": 0.5}}}


@pytest.mark.parametrize("text, message", [
    ("design: one_at_a_time\nparams:\n  losses.mssd.gamma: {distribution: uniform, low: 0.1, high: 1}\n",
     ":1: design: one_at_a_time needs grid params only"),
    ("design: latin_square\nparams:\n  losses.mssd.gamma: {distribution: grid, values: [0.1]}\n",
     ":1: design: expected one of factorial, one_at_a_time, got 'latin_square'"),
    ("params:\n  seed: {distribution: grid, values: [1, 2], crossed: true}\n",
     ":2: seed: crossed means something only with design: one_at_a_time"),
    ("design: one_at_a_time\nparams:\n  seed: {distribution: grid, values: [1, 2], crossed: yes please}\n",
     ":3: seed: crossed: expected true or false"),
    ("design: one_at_a_time\nparams:\n  seed: {distribution: grid, values: [1, 2], crossed: true}\n"
     "  losses.mssd.gamma: {distribution: grid, values: [0.1]}\n",
     ":1: design: one_at_a_time needs a param that is not crossed and has a value besides its reference"),
])
def test_a_bad_design_is_one_line_naming_file_and_line(tmp_path, text, message):
    path = write_space(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value) and "\n" not in str(err.value)


def test_effects_pair_each_variant_with_the_reference_of_the_same_seed():
    points = [({"seed": s, "g": g, "c": c}, v) for s, g, c, v in [
        (1, "0.05", "box", 0.30), (2, "0.05", "box", 0.20),  # the reference: seed 2 is 10 points worse
        (1, "0.5", "box", 0.32), (2, "0.5", "box", 0.22),    # +2 on each seed: a tight interval
        (1, "0.05", "px", 0.25), (2, "0.05", "px", 0.19),    # -5 and -1
    ]]
    effects = {e.factor: e for e in factor_effects(points, ["g", "c"], blocks=["seed"])}
    assert set(effects) == {"g", "c"}  # the seed is a block, not a factor
    assert effects["g"].summary.n == 2 and effects["g"].summary.mean == pytest.approx(0.02)
    assert effects["g"].summary.ci_low == pytest.approx(0.02) and effects["g"].summary.ci_high == pytest.approx(0.02)
    assert effects["c"].summary.mean == pytest.approx(-0.03) and effects["c"].reference == "box"


@pytest.mark.slow
def test_a_screening_study_runs_its_points_and_reports_paired_effects(ray_address, tiny_data, tmp_path):
    from study import tracking
    from study.report import write_report
    from study.tune import StudyOptions, run_study

    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    space = write_space(tmp_path, "design: one_at_a_time\nparams:\n"
                        "  seed: {distribution: grid, values: [1, 2], crossed: true}\n"
                        "  losses.mad.sigma2: {distribution: grid, values: [2.0, 8.0]}\n")
    run_study(StudyOptions(config=str(config), space=str(space), name="screen", workdir=str(tmp_path / "runs"),
                           max_concurrent=2, verbose=0, asha=False))
    records = tracking.study_trials(tracking.default_tracking_uri(tmp_path / "runs"), "screen")
    runs = sorted((r.params["losses.mad.sigma2"], r.params["seed"], r.name.split(" ", 1)[1]) for r in records)
    assert runs == [("2.0", "1", "reference seed=1"), ("2.0", "2", "reference seed=2"),
                    ("8.0", "1", "sigma2=8 seed=1"), ("8.0", "2", "sigma2=8 seed=2")]
    write_report(tmp_path / "runs", "screen")
    effects = (tmp_path / "runs" / "screen" / "report" / "effects.md").read_text()
    assert "| losses.mad.sigma2 | 8.0 vs 2.0 |" in effects and effects.count("\n| losses") == 1
    assert effects.strip().splitlines()[4].endswith("| 2 |")  # paired on both seeds
