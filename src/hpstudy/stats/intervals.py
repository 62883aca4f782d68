"""Intervals over seeds: the one t-interval, the prediction interval, Wilson for one test set.

    >>> seeds = [0.881, 0.884, 0.879, 0.886, 0.880]
    >>> mean = seed_interval(seeds)        # where the mean of many runs would lie (95%)
    >>> one = prediction_interval(seeds)   # where ONE new run would lie (95%): wider by sqrt(1+n)
    >>> place(89.5, one)                   # 'above': a single published run beats it
    >>> wilson_interval(0.8812, 10_000)    # one run: the test set's own binomial noise

Every table, verdict and figure gets its Student-t interval from `seed_interval` (the stage
tables' `mean_ci` and the replication verdict included), so no two of them can disagree on a row.
Accuracies are fractions in [0, 1]; a published number handed to `place` is in percent.
`Interval.low`/`high` are the bounds; `half` is the half-width (never called ci95: `ci95`
means `[low, high]` wherever it is written).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95
INSIDE, ABOVE, BELOW = "inside", "above", "below"


@dataclass(frozen=True)
class Interval:
    """A 95% interval of an accuracy (fractions) and how it was made."""

    mean: float
    low: float
    high: float
    n: int  # seeds (t-interval) or test images (Wilson)
    method: str  # e.g. "t-interval over 5 seeds", "Wilson, 10,000 test images"
    half: float = math.nan  # half-width where the interval is symmetric (t), else nan
    sd: float = math.nan  # sample standard deviation over the seeds (n - 1), nan for n < 2

    @property
    def known(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))


def _kept(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if not math.isnan(v)]


def _t(n: int, confidence: float) -> float:
    """Student's t quantile for a two-sided `confidence` interval with n - 1 degrees of freedom."""
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1))


def sample_sd(values: Sequence[float]) -> float:
    """Standard deviation with n - 1 in the denominator (nan values dropped; nan for n < 2)."""
    kept = _kept(values)
    n = len(kept)
    if n < 2:
        return math.nan
    mean = sum(kept) / n
    return math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1))


def seed_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and Student-t interval of the mean over seeds (nan values are dropped)."""
    kept = _kept(values)
    n = len(kept)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "no finished seed")
    mean = sum(kept) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1, "one seed: no t-interval")
    sd = sample_sd(kept)
    half = _t(n, confidence) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, f"t-interval over {n} seeds", half, sd)


def prediction_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Where one new run would land: mean ± t(n-1) · s · sqrt(1 + 1/n) (nan values dropped).

    A published number from a single run is judged against this, not against the interval of
    our mean: the mean's interval shrinks with more seeds, one run's spread does not."""
    kept = _kept(values)
    n = len(kept)
    if n < 2:
        mean = kept[0] if kept else math.nan
        return Interval(mean, math.nan, math.nan, n, "fewer than 2 seeds: no prediction interval")
    mean, sd = sum(kept) / n, sample_sd(kept)
    half = _t(n, confidence) * sd * math.sqrt(1 + 1 / n)
    return Interval(mean, mean - half, mean + half, n,
                    f"prediction interval for one run from {n} seeds", half, sd)  # fmt: skip


def wilson_interval(accuracy: float, n_images: int) -> Interval:
    """The test set's own sampling noise around one measured accuracy (Wilson score)."""
    if math.isnan(accuracy) or n_images < 1:
        return Interval(math.nan, math.nan, math.nan, 0, "no measurement")
    k = round(accuracy * n_images)
    ci = stats.binomtest(k, n_images).proportion_ci(CONFIDENCE, method="wilson")
    return Interval(accuracy, float(ci.low), float(ci.high), n_images,
                    f"Wilson, {n_images:,} test images")  # fmt: skip


def cell_interval(values: Sequence[float], n_images: int) -> Interval:
    """t-interval over seeds where there are two or more; Wilson for a single seed."""
    kept = _kept(values)
    return seed_interval(kept) if len(kept) != 1 else wilson_interval(kept[0], n_images)


def place(published: float, interval: Interval) -> str:
    """Where a published number (%) lies against an interval (fractions): inside, above, below;
    '' without an interval. The bounds count as inside."""
    if not interval.known:
        return ""
    if published > 100 * interval.high:
        return ABOVE
    if published < 100 * interval.low:
        return BELOW
    return INSIDE
