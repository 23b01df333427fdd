"""The alignment study's statistics on hand-made numbers: TOST and the paired t-test against
direct scipy computations, the smallest margin, the seed-to-seed gap, and fewer than 2 seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from analysis.compare_stats import (
    mean_pairwise_gap,
    paired_comparison,
    seeds_needed,
    smallest_margin,
    spread,
    tost,
)

DIFFS = np.array([0.4, -0.3, 0.9, 0.2, -0.1])


def _direct_tost(d: np.ndarray, margin: float) -> tuple[float, float]:
    """TOST written out: t = (mean -+ bound) / se, one-sided tails of t(n - 1)."""
    n, mean = len(d), d.mean()
    se = d.std(ddof=1) / math.sqrt(n)
    return stats.t.sf((mean + margin) / se, n - 1), stats.t.cdf((mean - margin) / se, n - 1)


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.0])
def test_tost_matches_the_direct_computation(margin: float) -> None:
    p_lower, p_upper = tost(DIFFS, margin)
    expected = _direct_tost(DIFFS, margin)
    assert p_lower == pytest.approx(expected[0], rel=1e-10)
    assert p_upper == pytest.approx(expected[1], rel=1e-10)


def test_textbook_paired_example() -> None:
    # Student's sleep data (Cushny & Peebles, 1905; R's `sleep`): extra hours of sleep of 10
    # patients under two drugs. Paired t-test: t = -4.0621, df = 9, p = 0.002833 (R's t.test).
    drug1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    drug2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    result = paired_comparison(drug2, drug1, margin=1.0)
    assert result.t_stat == pytest.approx(-4.0621, abs=1e-4)
    assert result.p_ttest == pytest.approx(0.002833, abs=1e-6)
    assert result.mean_diff == pytest.approx(-1.58)
    # mean -1.58 lies outside ±1, so TOST cannot establish equivalence within one hour ...
    assert not result.equivalent and result.p_tost > 0.5
    # ... and the smallest margin is the far end of the 90 % CI: -1.58 - 1.833 * 0.3890
    assert result.min_margin == pytest.approx(1.58 + stats.t.ppf(0.95, 9) * 0.388962, rel=1e-5)


def test_the_smallest_margin_is_where_tost_crosses_alpha() -> None:
    found = smallest_margin(DIFFS, 0.05)
    root = optimize.brentq(lambda m: max(tost(DIFFS, m)) - 0.05, 1e-6, 10.0, xtol=1e-12)
    assert found == pytest.approx(root, rel=1e-8)
    assert max(tost(DIFFS, found * 1.001)) < 0.05 < max(tost(DIFFS, found * 0.999))
    result = paired_comparison(np.zeros(5), DIFFS, margin=found * 1.001)
    assert result.equivalent and result.min_margin == pytest.approx(found)


def test_paired_t_test_matches_scipy() -> None:
    a = np.array([40.1, 39.2, 41.0, 38.7, 40.4])
    b = a + DIFFS
    result = paired_comparison(a, b)
    expected = stats.ttest_rel(b, a)
    assert result.t_stat == pytest.approx(expected.statistic)
    assert result.p_ttest == pytest.approx(expected.pvalue)
    assert result.sd_diff == pytest.approx(np.std(DIFFS, ddof=1))


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_seeds_give_no_tests(n: int) -> None:
    result = paired_comparison([40.0] * n, [40.5] * n)
    assert result.n == n and not result.testable
    assert not result.equivalent and not result.different
    for value in (result.sd_diff, result.p_ttest, result.p_tost, result.min_margin):
        assert math.isnan(value)
    assert (result.mean_diff == pytest.approx(0.5)) if n else math.isnan(result.mean_diff)
    s = spread([3.0] * n)
    assert s.n == n and math.isnan(s.std)


def test_identical_differences_give_exact_answers() -> None:
    result = paired_comparison([40.0, 41.0, 39.0], [40.2, 41.2, 39.2])
    assert result.sd_diff == pytest.approx(0.0, abs=1e-12)
    constant = paired_comparison([0.0, 0.0, 0.0], [0.2, 0.2, 0.2])
    assert constant.p_lower == 0.0 and constant.p_upper == 0.0 and constant.equivalent
    assert constant.p_ttest == 0.0 and constant.min_margin == pytest.approx(0.2)
    same = paired_comparison([1.0, 2.0], [1.0, 2.0])
    assert same.equivalent and math.isnan(same.p_ttest) and same.min_margin == 0.0
    outside = paired_comparison([0.0, 0.0], [1.5, 1.5])
    assert outside.p_upper == 1.0 and not outside.equivalent


def test_spread_and_pairwise_gap() -> None:
    s = spread([1.0, 2.0, math.nan, 4.0])
    assert (s.n, s.mean) == (3, pytest.approx(7 / 3))
    assert s.std == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    curves = np.array([[1.0, 2.0, math.nan], [2.0, 4.0, math.nan], [4.0, math.nan, 1.0]])
    gap = mean_pairwise_gap(curves)
    assert gap[0] == pytest.approx((1 + 3 + 2) / 3)  # pairs (0,1), (0,2), (1,2)
    assert gap[1] == pytest.approx(2.0)  # only runs 0 and 1 have epoch 2
    assert math.isnan(gap[2])  # one run only
    assert np.isnan(mean_pairwise_gap(curves[:1])).all()


def test_seeds_needed_is_the_first_n_that_reaches_the_margin() -> None:
    n = seeds_needed(0.1, 0.8, margin=1.0)
    assert n is not None and n >= 3

    def reach(k: int) -> float:
        return 0.1 + stats.t.ppf(0.95, k - 1) * 0.8 / math.sqrt(k)

    assert reach(n) < 1.0 <= reach(n - 1)
    assert seeds_needed(1.2, 0.1, margin=1.0) is None
    assert seeds_needed(math.nan, 0.1) is None
