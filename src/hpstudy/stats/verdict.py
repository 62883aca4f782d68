"""The reproduction verdict: each published number against our interval, each claim by a test.

    >>> interval = seed_interval([0.881, 0.884, 0.879, 0.886, 0.880])   # t-interval, n = 5
    >>> place(89.5, interval)                  # 'above': the paper's number is above ours
    >>> one = wilson_interval(0.8812, 10_000)  # one seed: the test set's own binomial noise
    >>> diff = paired_difference(adam, sgd)    # same seeds: paired t-interval of adam - sgd
    >>> judge_best("II", "Adam is the best optimizer", winner=adam_cell, others=[sgd, rmsprop])
    >>> mcnemar(winner_mask, runner_up_mask)   # exact McNemar test on the same test images

Everything here is pure: numbers in, verdicts out. Accuracies are fractions in [0, 1];
published numbers and everything a verdict reports are in percent (points for differences).
Intervals are 95%: Student's t over seeds where there are two or more, Wilson's score interval
for a single test-set proportion (scipy computes both). A claim is *supported* only when its
interval excludes the alternative, *contradicted* when it excludes the claim, and *inconclusive*
otherwise: a difference inside the noise is never called a win.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
INSIDE, ABOVE, BELOW = "inside", "above", "below"


@dataclass(frozen=True)
class Interval:
    """A 95% interval of an accuracy (fractions) and how it was made."""

    mean: float
    low: float
    high: float
    n: int  # seeds (t-interval) or test images (Wilson)
    method: str  # e.g. "t-interval over 5 seeds", "Wilson, 10,000 test images"

    @property
    def known(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))


def seed_interval(values: Sequence[float]) -> Interval:
    """Mean and 95% Student-t interval over seeds (nan values are dropped)."""
    kept = [float(v) for v in values if not math.isnan(v)]
    n = len(kept)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "no finished seed")
    mean = sum(kept) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1, "one seed: no t-interval")
    sd = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, f"t-interval over {n} seeds")


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
    kept = [v for v in values if not math.isnan(v)]
    return seed_interval(kept) if len(kept) != 1 else wilson_interval(kept[0], n_images)


def place(published: float, interval: Interval) -> str:
    """Where a published number (%) lies against our interval: inside, above or below it."""
    if not interval.known:
        return ""
    if published > 100 * interval.high:
        return ABOVE
    if published < 100 * interval.low:
        return BELOW
    return INSIDE


@dataclass(frozen=True)
class Difference:
    """A paired difference a - b over shared seeds, in points, with its 95% interval."""

    estimate: float  # mean difference, percentage points
    low: float
    high: float
    n: int  # seeds both sides finished
    p_value: float  # two-sided paired t-test (nan for n < 2)

    @property
    def ci95(self) -> list[float]:
        return [self.low, self.high]


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """a - b seed by seed (nan pairs dropped): paired t-interval and paired t-test, in points."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    diffs = [100 * (x - y) for x, y in pairs]
    n = len(diffs)
    if n == 0:
        return Difference(math.nan, math.nan, math.nan, 0, math.nan)
    mean = sum(diffs) / n
    if n < 2:
        return Difference(mean, math.nan, math.nan, 1, math.nan)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0:
        return Difference(mean, mean, mean, n, 0.0 if mean else 1.0)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    p = float(stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs]).pvalue)
    return Difference(mean, mean - half, mean + half, n, p)


@dataclass(frozen=True)
class Claim:
    """One of the paper's conclusions, judged."""

    id: str
    text: str
    verdict: str  # supported, contradicted or inconclusive
    test: str  # the test that decided, in words
    estimate: float  # points: claimed minus the best alternative, or measured minus claimed
    ci95: list[float]  # points
    n: int

    def to_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "verdict": self.verdict, "test": self.test,
                "estimate": _num(self.estimate), "ci95": [_num(v) for v in self.ci95],
                "n": self.n}  # fmt: skip


def judge_best(
    claim_id: str,
    text: str,
    winner: tuple[str, Sequence[float]],
    others: Sequence[tuple[str, Sequence[float]]],
) -> Claim:
    """ "`winner` is the best": paired differences (same seeds) against every alternative.

    Supported when every difference's interval lies above 0; contradicted when some
    alternative is better with its interval below 0; inconclusive otherwise. The estimate is
    the difference to the best alternative by mean.
    """
    label, values = winner
    diffs = {alt: paired_difference(values, alt_values) for alt, alt_values in others}
    better = [a for a, d in diffs.items() if d.n >= 2 and d.high < 0]
    unbeaten = [a for a, d in diffs.items() if not (d.n >= 2 and d.low > 0)]
    if better:  # the alternative that beats the claim most clearly decides
        verdict, shown = CONTRADICTED, min(better, key=lambda a: diffs[a].high)
    elif unbeaten:  # the closest alternative the claim does not beat decides
        verdict, shown = INCONCLUSIVE, min(unbeaten, key=lambda a: _nan_last(diffs[a].estimate))
    else:
        verdict, shown = SUPPORTED, min(diffs, key=lambda a: diffs[a].estimate)
    d = diffs[shown]
    test = (f"paired t-interval (95%) over {d.n} shared seeds of {label} minus each "
            f"alternative; shown: {label} minus {shown}, the one that decides")  # fmt: skip
    return Claim(claim_id, text, verdict, test, d.estimate, d.ci95, d.n)


def judge_value(claim_id: str, text: str, values: Sequence[float], claimed: float,
                n_images: int) -> Claim:  # fmt: skip
    """ "reaches `claimed` %": contradicted only when our interval lies wholly below it."""
    interval = cell_interval(values, n_images)
    low, high = 100 * interval.low - claimed, 100 * interval.high - claimed
    if not interval.known:
        verdict = INCONCLUSIVE
    elif high < 0:
        verdict = CONTRADICTED
    else:
        verdict = SUPPORTED
    test = f"{interval.method}: measured accuracy minus the claimed {claimed:g}%"
    estimate = 100 * interval.mean - claimed
    return Claim(claim_id, text, verdict, test, estimate, [low, high], interval.n)


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two classifiers on the same images."""

    only_a: int  # images a got right and b wrong
    only_b: int
    p_value: float

    @property
    def distinguishable(self) -> bool:
        return self.p_value < 1 - CONFIDENCE


def mcnemar(a_correct, b_correct) -> McNemar:
    """Exact (binomial) McNemar test on the discordant images of two correctness masks."""
    import numpy as np

    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks of different lengths: {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return McNemar(0, 0, 1.0)
    p = float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return McNemar(only_a, only_b, p)


def _nan_last(x: float) -> float:
    return math.inf if math.isnan(x) else x


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)
