"""Student's t and the sweep statistics against table values and hand computations."""

from __future__ import annotations

import math

import pytest

from apt.sweeps.stats import mean_ci, paired_t, t_cdf, t_ppf


@pytest.mark.parametrize(("p", "df", "table"), [
    (0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 3, 3.182), (0.975, 4, 2.776), (0.975, 5, 2.571),
    (0.975, 10, 2.228), (0.975, 30, 2.042), (0.95, 10, 1.812), (0.995, 5, 4.032), (0.9, 1, 3.078),
])
def test_t_quantiles_match_the_printed_table(p, df, table):
    assert t_ppf(p, df) == pytest.approx(table, abs=5e-4)
    assert t_ppf(1 - p, df) == pytest.approx(-table, abs=5e-4)
    assert t_cdf(t_ppf(p, df), df) == pytest.approx(p, abs=1e-12)


def test_t_cdf_matches_closed_forms():
    for df in (1, 2, 7, 50):
        assert t_cdf(0.0, df) == pytest.approx(0.5)
    for t in (-3.0, -0.5, 0.7, 2.0, 12.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert t_cdf(1.96, 10_000) == pytest.approx(0.9750, abs=1e-4)  # -> the normal
    assert t_cdf(math.inf, 3) == 1.0 and t_cdf(-math.inf, 3) == 0.0
    with pytest.raises(ValueError):
        t_ppf(1.0, 3)


def test_mean_and_ci_by_hand():
    mean, ci = mean_ci([1.50, 1.48, 1.52])
    # sd = 0.02, t(0.975, 2) = 4.302653
    assert mean == pytest.approx(1.50) and ci == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    assert mean_ci([1.7]) == (1.7, None)  # one value: no interval, not 0 or NaN
    assert mean_ci([]) == (None, None)


def test_paired_t_by_hand():
    a, b = [1.50, 1.48, 1.52], [1.55, 1.50, 1.58]
    test = paired_t(a, b)
    # differences -0.05, -0.02, -0.06: mean -0.043333, sd 0.0208167, se 0.0120185
    se = math.sqrt(((0.05 - 0.13 / 3) ** 2 + (0.02 - 0.13 / 3) ** 2 + (0.06 - 0.13 / 3) ** 2) / 2) / math.sqrt(3)
    t = -0.13 / 3 / se
    assert test.n == 3 and test.mean_diff == pytest.approx(-0.13 / 3)
    assert test.t == pytest.approx(t) and t == pytest.approx(-3.605551, rel=1e-6)
    assert test.ci == pytest.approx(4.302653 * se, rel=1e-6)
    # two-sided p with 2 df in closed form: 2 * (0.5 - |t| / (2 sqrt(2 + t^2)))
    assert test.p_value == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t), rel=1e-9)
    assert test.p_value == pytest.approx(0.069051, abs=1e-6)
    one = paired_t([1.0], [2.0])
    assert (one.mean_diff, one.ci, one.t, one.p_value) == (-1.0, None, None, None)
    same = paired_t([1.0, 2.0], [1.0, 2.0])
    assert same.p_value == 1.0 and same.ci == 0.0
    with pytest.raises(ValueError):
        paired_t([1.0, 2.0], [1.0])
