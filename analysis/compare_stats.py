"""The statistics of the alignment study (``compare.py``), framework-free: numpy and scipy.

- ``spread``: mean and sample standard deviation (ddof 1) of per-seed values; the deviation is
  undefined (nan) for fewer than 2 seeds.
- ``mean_pairwise_gap``: per epoch, the mean |a - b| over all pairs of runs of one framework with
  different seeds: the seed-to-seed spread in the units of the |Δ| between two runs.
- ``paired_comparison``: the per-seed differences d = other - reference (e.g. Jittor - PyTorch
  top-1 of the same seed): the plain paired t-test (two-sided, H0: mean d = 0) and the
  equivalence test TOST (two one-sided t-tests, Schuirmann 1987: H0 mean d <= -margin, rejected
  when ``p_lower`` < alpha, and H0 mean d >= +margin, rejected when ``p_upper`` < alpha;
  equivalence at level alpha when both are, i.e. ``p_tost = max(p_lower, p_upper)`` < alpha).
  ``min_margin`` is the smallest margin the data establish at ``alpha``: any margin above
  |mean d| + t(1 - alpha; n - 1) * sd / sqrt(n) (the far end of the 1 - 2 alpha confidence
  interval). Both tests need n >= 2 seeds; with fewer every p-value is nan.
- ``seeds_needed``: a planning figure, the smallest n with which the observed mean and standard
  deviation of d would give TOST p < alpha at the margin (None when the mean itself is outside).

A zero standard deviation (identical differences, up to round-off) gives exact answers instead
of scipy's precision warnings: the t statistics are infinite, the p-values 0 or 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import stats

ALPHA = 0.05
MARGIN = 1.0  # points of top-1 accuracy


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of n values (std nan for n < 2, both for n = 0)."""

    n: int
    mean: float
    std: float


def spread(values: Sequence[float]) -> Spread:
    """Mean and sample standard deviation (ddof 1) of ``values``, NaNs left out."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    mean = float(x.mean()) if len(x) else math.nan
    std = float(x.std(ddof=1)) if len(x) >= 2 else math.nan
    return Spread(len(x), mean, std)


def mean_pairwise_gap(curves: np.ndarray) -> np.ndarray:
    """Runs x epochs (NaN where a run has no value) -> per epoch the mean |a - b| over all
    pairs of runs that have that epoch; NaN where fewer than 2 do."""
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2:
        raise ValueError(f"expected runs x epochs, got shape {curves.shape}")
    gaps = [np.abs(a - b) for a, b in combinations(curves, 2)]
    if not gaps:
        return np.full(curves.shape[1], math.nan)
    stacked = np.stack(gaps)
    counts = (~np.isnan(stacked)).sum(axis=0)
    sums = np.nansum(stacked, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), math.nan)


def _mean_sd(d: np.ndarray) -> tuple[float, float]:
    """Mean and sample std of d; a std at round-off level of the mean (values that are equal
    but for the last bits, e.g. the same difference of two accuracies) counts as 0."""
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    return mean, (0.0 if sd <= 1e-12 * max(1.0, abs(mean)) else sd)


def _one_sided(d: np.ndarray, bound: float, alternative: str) -> float:
    """p of the one-sample t-test of mean d against ``bound`` ("greater" or "less")."""
    mean, sd = _mean_sd(d)
    if sd == 0.0:  # identical differences: the statistic is +-inf (or 0/0 on the bound)
        above = mean > bound if alternative == "greater" else mean < bound
        return 0.0 if above else 1.0
    return float(stats.ttest_1samp(d, bound, alternative=alternative).pvalue)


def tost(diffs: Sequence[float], margin: float) -> tuple[float, float]:
    """(p_lower, p_upper) of the two one-sided tests of ``diffs`` against (-margin, +margin);
    (nan, nan) for fewer than 2 values."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return math.nan, math.nan
    return _one_sided(d, -margin, "greater"), _one_sided(d, margin, "less")


def smallest_margin(diffs: Sequence[float], alpha: float = ALPHA) -> float:
    """The margin at which TOST's p equals ``alpha``: equivalence holds at level alpha for every
    larger margin. |mean| + t(1 - alpha; n - 1) * se; nan for fewer than 2 values."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return math.nan
    mean, sd = _mean_sd(d)
    return abs(mean) + float(stats.t.ppf(1 - alpha, len(d) - 1)) * sd / math.sqrt(len(d))


def paired_t(diffs: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of the paired t-test (H0: mean difference 0); nan for n < 2."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return math.nan, math.nan
    mean, sd = _mean_sd(d)
    if sd == 0.0:
        return (math.nan, math.nan) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    result = stats.ttest_1samp(d, 0.0)
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class PairedComparison:
    """The paired tests of per-seed differences d = other - reference (see the module doc)."""

    n: int
    mean_diff: float
    sd_diff: float
    t_stat: float
    p_ttest: float
    margin: float
    p_lower: float
    p_upper: float
    min_margin: float
    alpha: float

    @property
    def p_tost(self) -> float:
        return max(self.p_lower, self.p_upper) if self.n >= 2 else math.nan

    @property
    def testable(self) -> bool:
        return self.n >= 2

    @property
    def equivalent(self) -> bool:
        """TOST rejects non-equivalence at ``alpha`` for ``margin``."""
        return self.testable and self.p_tost < self.alpha

    @property
    def different(self) -> bool:
        """The paired t-test rejects a zero mean difference at ``alpha``."""
        return self.testable and self.p_ttest < self.alpha


def paired_comparison(
    reference: Sequence[float],
    other: Sequence[float],
    margin: float = MARGIN,
    alpha: float = ALPHA,
) -> PairedComparison:
    """Both tests on the pairs (reference[i], other[i]), d = other - reference."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need equal 1-D shapes, got {a.shape} and {b.shape}")
    d = b - a
    mean, sd = _mean_sd(d) if len(d) >= 2 else (spread(d).mean, math.nan)
    t_stat, p_ttest = paired_t(d)
    p_lower, p_upper = tost(d, margin)
    return PairedComparison(
        n=len(d), mean_diff=mean, sd_diff=sd, t_stat=t_stat, p_ttest=p_ttest,
        margin=margin, p_lower=p_lower, p_upper=p_upper,
        min_margin=smallest_margin(d, alpha), alpha=alpha,
    )  # fmt: skip


def seeds_needed(
    mean: float, sd: float, margin: float = MARGIN, alpha: float = ALPHA, most: int = 1000
) -> int | None:
    """Smallest n >= 2 with |mean| + t(1 - alpha; n - 1) * sd / sqrt(n) < margin, if the
    differences kept this mean and standard deviation; None if no n up to ``most`` does."""
    if math.isnan(mean) or math.isnan(sd) or abs(mean) >= margin:
        return None
    for n in range(2, most + 1):
        if abs(mean) + float(stats.t.ppf(1 - alpha, n - 1)) * sd / math.sqrt(n) < margin:
            return n
    return None
