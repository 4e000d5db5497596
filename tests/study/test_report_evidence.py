"""mssd report's evidence sections: factor effects of a grid, and how early rankings predict final ones."""

from __future__ import annotations

import pytest
import scipy.stats

from study.report_evidence import (
    asha_rungs,
    early_ranking,
    early_ranking_markdown,
    effects_markdown,
    factor_effects,
    spearman,
)


def _factorial(effect_a: float, effect_b: float, noise: list[float]):
    points = []
    for i, (a, b) in enumerate([(a, b) for a in ("off", "on") for b in ("x", "y")] * 2):
        params = {"a": a, "b": b, "rep": str(i // 4)}
        points.append((params, 0.2 + effect_a * (a == "on") + effect_b * (b == "y") + noise[i]))
    return points


def test_a_factor_effect_is_the_mean_of_deltas_paired_over_the_other_factors():
    noise = [0.0, 0.01, -0.01, 0.0, 0.02, 0.0, 0.0, -0.02]
    effects = {e.factor: e for e in factor_effects(_factorial(0.05, 0.0, noise), ["a", "b", "rep"])}
    a = effects["a"]
    assert (a.value, a.reference) == ("on", "off")
    # cells (b, rep): on - off = 0.05 + noise differences
    deltas = [0.05 + noise[2] - noise[0], 0.05 + noise[3] - noise[1], 0.05 + noise[6] - noise[4],
              0.05 + noise[7] - noise[5]]
    assert a.summary.n == 4
    assert a.summary.mean == pytest.approx(sum(deltas) / 4)
    reference = scipy.stats.ttest_1samp(deltas, 0.0)
    low, high = reference.confidence_interval(0.95)
    assert (a.summary.ci_low, a.summary.ci_high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    assert a.summary.p_value == pytest.approx(reference.pvalue, abs=1e-9)
    assert a.summary.excludes_zero
    b_deltas = [noise[1] - noise[0], noise[3] - noise[2], noise[5] - noise[4], noise[7] - noise[6]]
    assert effects["b"].summary.mean == pytest.approx(sum(b_deltas) / 4)
    assert not effects["b"].summary.excludes_zero


def test_effects_table_marks_intervals_that_exclude_zero():
    effects = factor_effects(_factorial(0.05, 0.0, [0.0, 0.01, -0.01, 0.0, 0.02, 0.0, 0.0, -0.02]), ["a", "b", "rep"])
    text = effects_markdown(effects, "map")
    row = next(line for line in text.splitlines() if line.startswith("| a |"))
    assert row.count("*") == 1 and "on vs off" in row
    assert "| b |" in text


def test_a_factor_with_one_value_has_no_effect_row():
    points = [({"a": "on", "b": "x"}, 0.1), ({"a": "on", "b": "y"}, 0.2)]
    assert [e.factor for e in factor_effects(points, ["a", "b"])] == ["b"]


def test_spearman_equals_scipy_with_ties():
    a = [0.1, 0.4, 0.4, 0.2, 0.9, 0.5]
    b = [0.3, 0.2, 0.5, 0.1, 0.8, 0.8]
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_asha_rungs_follow_the_grace_period_and_reduction_factor():
    assert asha_rungs(1, 2.0, 24) == [1, 2, 4, 8, 16]
    assert asha_rungs(6, 2.0, 24) == [6, 12]
    assert asha_rungs(6, 3.0, 6) == []


def test_early_ranking_names_a_slow_starter_that_finishes_first():
    curves = {
        "t00": [(1, 0.10), (2, 0.12), (4, 0.14)],
        "t01": [(1, 0.09), (2, 0.11), (4, 0.13)],
        "t02": [(1, 0.01), (2, 0.05), (4, 0.20)],  # slow start, best at the end
        "t03": [(1, 0.05), (2, 0.06), (4, 0.07)],
    }
    results = {r.epoch: r for r in early_ranking(curves, [1, 2], eta=2.0)}
    assert results[1].cut_but_top == ["t02"]
    assert results[1].trials == 4
    assert results[1].spearman == pytest.approx(scipy.stats.spearmanr([0.10, 0.09, 0.01, 0.05],
                                                                      [0.14, 0.13, 0.20, 0.07]).statistic)
    assert "t02" in early_ranking_markdown(list(results.values()), "map", 2.0)


def test_early_ranking_needs_three_trials():
    assert early_ranking({"a": [(1, 0.1)], "b": [(1, 0.2)]}, [1], 2.0) == []
    assert "Fewer than 3" in early_ranking_markdown([], "map", 2.0)


def test_tunes_grace_period_defaults_to_a_quarter_of_the_epochs():
    from study.tune.options import StudyOptions, resolve_grace_period

    assert StudyOptions(config="c.yaml", space="s.yaml").grace_period is None
    assert resolve_grace_period(None, 24) == 6
    assert resolve_grace_period(None, 3) == 1
    assert resolve_grace_period(2, 24) == 2
