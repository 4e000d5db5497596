"""Paired t statistics (study.paired_stats) against scipy on fixed numbers; scipy is only the oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from study.paired_stats import (
    PairedSummary,
    format_delta,
    paired_deltas,
    paired_summary,
    student_t_quantile,
    student_t_sf2,
)

stats = pytest.importorskip("scipy.stats")

# Fixed (treated, baseline) pairs of mAP-like fractions; n = 2, 3, 5 and 30.
RNG = np.random.default_rng(20261206)
CASES = {
    2: ([0.262, 0.271], [0.255, 0.259]),
    3: ([0.301, 0.288, 0.297], [0.290, 0.291, 0.280]),
    5: ([0.25, 0.31, 0.27, 0.22, 0.29], [0.26, 0.27, 0.28, 0.24, 0.25]),
    30: (list(0.3 + 0.02 * RNG.standard_normal(30)), list(0.29 + 0.02 * RNG.standard_normal(30))),
}


@pytest.mark.parametrize("n", sorted(CASES))
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_interval_and_p_value_equal_scipy_ttest_rel(n, confidence):
    treated, baseline = CASES[n]
    summary = paired_summary([a - b for a, b in zip(treated, baseline, strict=True)], confidence)
    oracle = stats.ttest_rel(treated, baseline)
    interval = oracle.confidence_interval(confidence)
    assert summary.n == n
    assert summary.mean == pytest.approx(np.mean(np.subtract(treated, baseline)), rel=1e-12)
    assert summary.sd == pytest.approx(np.std(np.subtract(treated, baseline), ddof=1), rel=1e-12)
    assert summary.ci_low == pytest.approx(interval.low, rel=1e-9, abs=1e-12)
    assert summary.ci_high == pytest.approx(interval.high, rel=1e-9, abs=1e-12)
    assert summary.p_value == pytest.approx(oracle.pvalue, rel=1e-9, abs=1e-15)
    assert summary.confidence == confidence


@pytest.mark.parametrize("df", [1, 2, 4, 29, 200])
@pytest.mark.parametrize("q", [0.6, 0.95, 0.975, 0.995, 0.999999, 0.025])
def test_t_quantile_equals_scipy(df, q):
    assert student_t_quantile(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-9)


@pytest.mark.parametrize("df", [1, 3, 29])
@pytest.mark.parametrize("t", [0.0, 0.05, 1.0, 2.5, 40.0, 1e5])
def test_two_sided_tail_equals_scipy_even_far_out(df, t):
    assert student_t_sf2(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9, abs=1e-300)


def test_excludes_zero_only_when_the_whole_interval_is_on_one_side():
    above = paired_summary([0.02, 0.03, 0.025])
    straddles = paired_summary([0.02, -0.01, 0.005])
    below = paired_summary([-0.02, -0.03, -0.025])
    assert above.excludes_zero and above.ci_low > 0
    assert not straddles.excludes_zero and straddles.ci_low < 0 < straddles.ci_high
    assert below.excludes_zero and below.ci_high < 0


def test_one_seed_gives_a_mean_but_no_interval_and_no_p_value():
    summary = paired_summary([0.0123])
    assert summary == PairedSummary(1, 0.0123, None, None, None, None)
    assert not summary.excludes_zero
    assert format_delta(summary) == "+1.23 (n = 1)"


def test_no_pair_gives_nothing_and_formats_as_a_dash():
    summary = paired_summary([])
    assert summary.n == 0 and math.isnan(summary.mean)
    assert summary.sd is summary.ci_low is summary.ci_high is summary.p_value is None
    assert format_delta(summary) == "-"


def test_equal_nonzero_deltas_give_a_zero_width_interval_and_p_zero():
    summary = paired_summary([0.01, 0.01, 0.01])
    assert summary.sd == 0.0
    assert summary.ci_low == summary.ci_high == pytest.approx(0.01)
    assert summary.p_value == 0.0
    assert summary.excludes_zero


def test_all_zero_deltas_give_p_one_and_do_not_exclude_zero():
    summary = paired_summary([0.0, 0.0])
    assert (summary.ci_low, summary.ci_high, summary.p_value) == (0.0, 0.0, 1.0)
    assert not summary.excludes_zero


def test_pairing_by_seed_ignores_unpaired_seeds_and_non_finite_values():
    treated = {1: 0.30, 2: 0.32, 3: 0.31, 7: 0.5, 8: math.nan}
    baseline = {2: 0.30, 1: 0.29, 3: 0.33, 9: 0.1, 8: 0.2}
    deltas = paired_deltas(treated, baseline)
    assert list(deltas) == [1, 2, 3]
    assert deltas == pytest.approx({1: 0.01, 2: 0.02, 3: -0.02})


def test_format_delta_always_signs_and_keeps_the_same_decimals():
    summary = PairedSummary(5, 0.0123, 0.01, -0.004, 0.0286, 0.04)
    assert format_delta(summary) == "+1.23 [-0.40, +2.86]"
    assert format_delta(summary, digits=1) == "+1.2 [-0.4, +2.9]"
    assert format_delta(PairedSummary(3, 0.02, 0.0, 0.02, 0.02, 0.0)) == "+2.00 [+2.00, +2.00]"
    assert format_delta(PairedSummary(2, -0.00001, 0.1, -0.5, 0.5, 0.9)) == "+0.00 [-50.00, +50.00]"
    assert format_delta(summary, scale=1.0, digits=4) == "+0.0123 [-0.0040, +0.0286]"


def test_bad_confidence_is_refused_with_the_value():
    with pytest.raises(ValueError, match="confidence.*1.5"):
        paired_summary([0.1, 0.2], confidence=1.5)
