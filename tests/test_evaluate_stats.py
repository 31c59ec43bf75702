"""Intervals of evaluations against known values."""

import math

import numpy as np
import pytest

from lab2048.play.stats import (
    mean_interval,
    paired_difference,
    t_quantile,
    wilson_interval,
)


@pytest.mark.parametrize(("df", "exact"), [(1, 12.706205), (2, 4.302653), (3, 3.182446),
                                           (4, 2.776445), (9, 2.262157), (31, 2.039513),
                                           (100, 1.983972)])
def test_t_quantiles_against_the_table(df, exact):
    assert t_quantile(df) == pytest.approx(exact, rel=1e-6)


def test_mean_interval_golden():
    mean, lo, hi = mean_interval([1, 2, 3, 4, 5])  # s = 1.5811, t(4) = 2.7764
    assert mean == 3 and lo == pytest.approx(3 - 1.963243, abs=2e-3)
    assert hi == pytest.approx(3 + 1.963243, abs=2e-3)
    assert mean_interval([7.0]) == (7.0, 7.0, 7.0)


def test_paired_difference_uses_the_pairs():
    rng = np.random.default_rng(0)
    base = rng.normal(10_000, 3_000, 64)  # what the seed gives both agents
    a, b = base + 500 + rng.normal(0, 100, 64), base + rng.normal(0, 100, 64)
    mean, lo, hi = paired_difference(a, b)
    assert lo < 500 < hi and hi - lo < 100  # the seeds' spread cancels
    _, alo, ahi = mean_interval(a)
    assert ahi - alo > 10 * (hi - lo)
    mean, lo, hi = paired_difference([3, 5, 4], [1, 2, 4])  # differences 2, 3, 0
    assert mean == pytest.approx(5 / 3)
    half = 4.302653 * math.sqrt(np.var([2, 3, 0], ddof=1) / 3)
    assert (lo, hi) == pytest.approx((5 / 3 - half, 5 / 3 + half), rel=1e-4)
    with pytest.raises(ValueError, match="length"):
        paired_difference([1, 2], [1])


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [(0, 10, 0.0, 0.277533), (5, 10, 0.236593,
                                                  0.763407), (10, 10, 0.722467, 1.0),
                                                  (20, 64, 0.212311, 0.433923)])
def test_wilson_interval_golden(k, n, lo, hi):
    p, a, b = wilson_interval(k, n)
    assert p == k / n and a == pytest.approx(lo, abs=1e-5) and b == pytest.approx(hi, abs=1e-5)
