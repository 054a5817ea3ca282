"""Small-sample statistics for sweep summaries: Student's t, confidence intervals, paired tests.

Sweeps have a handful of seeds per configuration, so intervals use the t distribution with
n - 1 degrees of freedom, not the normal. The t CDF is computed from the regularized
incomplete beta function (continued fraction, as in Numerical Recipes ``betai``) and its
quantile by bisection on the CDF; both are plain Python so the summary needs neither scipy
nor numpy. Results with too few values to estimate a spread are None, never 0 or NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PairedTest", "mean_ci", "paired_t", "t_cdf", "t_ppf"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``0 < p < 1``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float | None, float | None]:
    """``(mean, half-width of the level CI)``; half-width None below two values, both None for none."""
    if not values:
        return None, None
    if len(values) < 2:
        return float(values[0]), None
    mean, sd = _mean_sd(values)
    n = len(values)
    return mean, t_ppf(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)


@dataclass(frozen=True)
class PairedTest:
    """Paired t-test of ``a - b``: mean difference, its CI half-width, t and two-sided p."""

    n: int
    mean_diff: float
    ci: float | None
    t: float | None
    p_value: float | None


def paired_t(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedTest:
    """Paired t-test on ``a[i] - b[i]`` (df = n - 1); CI, t and p are None below two pairs.

    Identical differences (zero spread) give p = 1 when they are all zero and p = 0 otherwise.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_t needs two equally long, non-empty sequences, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    if n < 2:
        return PairedTest(n, diffs[0], None, None, None)
    mean, sd = _mean_sd(diffs)
    se = sd / math.sqrt(n)
    ci = t_ppf(0.5 + level / 2.0, n - 1) * se
    if se == 0.0:
        return PairedTest(n, mean, ci, None, 1.0 if mean == 0.0 else 0.0)
    t = mean / se
    return PairedTest(n, mean, ci, t, 2.0 * (1.0 - t_cdf(abs(t), n - 1)))
