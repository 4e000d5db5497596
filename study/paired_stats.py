"""Paired statistics over seeds: is a configuration better than its baseline beyond seed noise?

Two runs that differ only in the setting under test and share a seed form a pair; their difference
(treated minus baseline) is one observation. Over n seeds the paired t interval is

    mean +- t_{n-1, (1 + confidence) / 2} * sd / sqrt(n)

with ``sd`` the sample standard deviation (n - 1 in the denominator), and the two-sided p-value is
``P(|T_{n-1}| >= |mean| / (sd / sqrt(n)))`` (the null hypothesis: the mean delta is 0). This equals
``scipy.stats.ttest_rel``; scipy is not a run-time dependency, so the Student-t CDF and quantile are
computed here from the regularised incomplete beta function (a continued fraction).

Edge cases (documented because scipy answers NaN or raises there):

- n = 0: nothing to summarise (``mean`` is NaN, no sd, no interval, no p-value);
- n = 1: a mean but no spread, so no interval and no p-value (``format_delta`` says ``n = 1``);
- n > 1 with every delta equal (sd = 0): the interval has zero width at the mean; the p-value is 0
  when the mean is not 0 (every seed moved by the same amount) and 1 when it is 0 (no seed moved).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PairedSummary", "format_delta", "paired_deltas", "paired_summary", "student_t_sf2", "student_t_quantile"]


@dataclass(frozen=True)
class PairedSummary:
    """The paired t summary of n per-seed deltas (see the module docstring for the edge cases)."""

    n: int
    mean: float
    sd: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    confidence: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        """True when an interval exists and 0 lies outside it (the delta is beyond seed noise)."""
        if self.ci_low is None or self.ci_high is None:
            return False
        return self.ci_low > 0.0 or self.ci_high < 0.0


def paired_deltas(treated: Mapping[int, float], baseline: Mapping[int, float]) -> dict[int, float]:
    """Seed -> ``treated[seed] - baseline[seed]`` for the seeds present in both.

    A seed whose value is not finite on either side (e.g. APs with no small ground truth) is unpaired
    too: a NaN delta would make every statistic NaN.
    """
    deltas: dict[int, float] = {}
    for seed in sorted(set(treated) & set(baseline)):
        a, b = float(treated[seed]), float(baseline[seed])
        if math.isfinite(a) and math.isfinite(b):
            deltas[seed] = a - b
    return deltas


def paired_summary(deltas: Sequence[float], confidence: float = 0.95) -> PairedSummary:
    """Mean, sample sd, ``confidence`` interval (paired t) and two-sided p-value of ``deltas``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    values = [float(d) for d in deltas]
    n = len(values)
    if n == 0:
        return PairedSummary(0, math.nan, None, None, None, None, confidence)
    mean = math.fsum(values) / n
    if n == 1:
        return PairedSummary(1, mean, None, None, None, None, confidence)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    if sd == 0.0:
        return PairedSummary(n, mean, 0.0, mean, mean, 0.0 if mean != 0.0 else 1.0, confidence)
    df = n - 1
    se = sd / math.sqrt(n)
    half_width = student_t_quantile(1.0 - (1.0 - confidence) / 2.0, df) * se
    p_value = student_t_sf2(abs(mean) / se, df)
    return PairedSummary(n, mean, sd, mean - half_width, mean + half_width, p_value, confidence)


def format_delta(s: PairedSummary, digits: int = 2, scale: float = 100.0) -> str:
    """``+1.23 [-0.40, +2.86]`` (mean and interval times ``scale``, always signed, always ``digits``
    decimals); ``+1.23 (n = 1)`` without an interval; ``-`` when there is no pair at all."""
    if s.n == 0:
        return "-"
    mean = _signed(s.mean * scale, digits)
    if s.ci_low is None or s.ci_high is None:
        return f"{mean} (n = {s.n})"
    return f"{mean} [{_signed(s.ci_low * scale, digits)}, {_signed(s.ci_high * scale, digits)}]"


def _signed(value: float, digits: int) -> str:
    text = f"{value:+.{digits}f}"
    # A value that rounds to zero prints as +0.00: "-0.00" would claim a sign the digits cannot show.
    return "+" + text[1:] if text.startswith("-") and float(text) == 0.0 else text


# --- Student's t distribution ------------------------------------------------------------------------


def student_t_sf2(t: float, df: float) -> float:
    """Two-sided tail ``P(|T| >= |t|)`` of Student's t with ``df`` degrees of freedom.

    ``P(|T| >= t) = I_x(df / 2, 1 / 2)`` with ``x = df / (df + t^2)`` (regularised incomplete beta).
    """
    if df <= 0:
        raise ValueError(f"df: expected a positive number, got {df!r}")
    t2 = float(t) * float(t)
    if math.isinf(t2):
        return 0.0
    # x and 1 - x both computed directly, so neither loses digits to a subtraction from 1.
    return _regularised_beta(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))


def student_t_quantile(q: float, df: float) -> float:
    """The ``t`` with ``P(T <= t) = q`` for Student's t with ``df`` degrees of freedom.

    Solved on ``x = df / (df + t^2)`` (where the tail is monotone) by bisection down to adjacent floats:
    about 60 steps, each a continued fraction; slow next to scipy but exact enough for any n of seeds.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q: expected a probability in (0, 1), got {q!r}")
    if q == 0.5:
        return 0.0
    tail = 2.0 * min(q, 1.0 - q)  # the two-sided tail P(|T| >= |t|) we need, increasing in x
    lo, hi = 0.0, 1.0
    while True:
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if _regularised_beta(df / 2.0, 0.5, mid, 1.0 - mid) < tail:
            lo = mid
        else:
            hi = mid
    x = 0.5 * (lo + hi)
    t = math.sqrt(df * (1.0 - x) / x)
    return t if q > 0.5 else -t


def _regularised_beta(a: float, b: float, x: float, one_minus_x: float) -> float:
    """``I_x(a, b)``, with ``1 - x`` passed separately to keep its digits when x is close to 1."""
    if x <= 0.0:
        return 0.0
    if one_minus_x <= 0.0:
        return 1.0
    # The continued fraction converges fast below the distribution's mean-ish point (a + 1) / (a + b + 2);
    # above it, use the symmetry I_x(a, b) = 1 - I_{1-x}(b, a).
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _regularised_beta(b, a, one_minus_x, x)
    log_front = (a * math.log(x) + b * math.log(one_minus_x)
                 - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)) - math.log(a))
    return math.exp(log_front) * _beta_continued_fraction(a, b, x)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """``1 / (1 + d1 / (1 + d2 / (1 + ...)))`` for the incomplete beta (DLMF 8.17.22), evaluated
    front to back with the modified Lentz method (no term is ever divided by a near-zero number)."""
    tiny, eps = 1e-300, 1e-16

    def guard(v: float) -> float:
        return tiny if abs(v) < tiny else v

    # f = b0 + a1 / (b1 + a2 / (b2 + ...)) with b0 = 0, a1 = 1, every later b = 1, a_{k+1} = d_k.
    f = tiny  # b0 = 0, guarded
    c, d = f, 0.0
    for k in range(0, 10_000):
        if k == 0:
            numerator = 1.0
        elif k % 2 == 1:  # d_{2m+1}
            m = (k - 1) // 2
            numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:  # d_{2m}
            m = k // 2
            numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 / guard(1.0 + numerator * d)
        c = guard(1.0 + numerator / c)
        step = c * d
        f *= step
        if abs(step - 1.0) < eps:
            return f
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")
