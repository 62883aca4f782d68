"""Equivalence within a margin: two one-sided paired t-tests (TOST), Holm-adjusted as a family.

    >>> e = tost(best, cheaper, margin=0.5)      # paired over seeds, best - cheaper, in points
    >>> e.estimate, e.ci90, e.p_value            # p_TOST = the larger one-sided p
    >>> found = equivalent_to(best, [("T1-SGD-0.01-ReLU", t1), ("T2-...", t2)], margin=0.5)
    >>> found[0].equivalent, found[0].p_holm     # Holm-adjusted over the comparisons

"Not distinguishable" (a two-sided test that fails to reject) is absence of evidence: with five
seeds a gap of 1.7 points can fail it. Equivalence turns the question round: the null hypothesis
is that the two differ by at least `margin` points, in either direction, and it must be
rejected. Schuirmann (1987): test d <= -margin (H0 low) and d >= +margin (H0 high), each one-sided
at alpha; equivalence is shown when both are rejected, so p_TOST = max of the two p-values. At
alpha = 0.05 that is the same as the 90% t-interval of the mean difference lying inside
(-margin, +margin), which is why `ci90` is the interval to show beside it.

A family of such comparisons (the best against every cheaper candidate) is adjusted with Holm
(`multiplicity.holm`), which holds under any dependence (they all share the best's seeds).
Fewer than two shared seeds: no test (nan), never equivalent. Every pair differing by the same
amount (no spread): equivalent (p 0) when that amount is strictly inside the margin, else p 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

from hpstudy.stats.intervals import seed_interval
from hpstudy.stats.verdict import ALPHA, holm, json_number, paired_points

TOST_CONFIDENCE = 1 - 2 * ALPHA  # 90%: the interval that TOST at ALPHA checks against the margin
_DIGITS = 9  # differences in points rounded to this many decimals (float noise is ~1e-14)


@dataclass(frozen=True)
class Equivalence:
    """a - b in points, paired over shared seeds, tested against ±margin."""

    estimate: float  # mean difference, points
    low: float  # its 90% t-interval (TOST_CONFIDENCE)
    high: float
    n: int  # shared seeds
    margin: float  # points
    p_low: float  # one-sided p of H0: difference <= -margin
    p_high: float  # one-sided p of H0: difference >= +margin

    @property
    def p_value(self) -> float:
        """p_TOST: the larger one-sided p (nan where untestable)."""
        return max(self.p_low, self.p_high) if self.n >= 2 else math.nan

    @property
    def ci90(self) -> list[float]:
        return [self.low, self.high]


def tost(a: Sequence[float], b: Sequence[float], margin: float) -> Equivalence:
    """Two one-sided paired t-tests of a - b (accuracies as fractions, same seeds in the same
    order) against ±`margin` points."""
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be > 0 points, got margin={margin!r}")
    # Accuracies are counts over the evaluation images (k / n_eval), which floats hold only
    # approximately: a - b in points carries noise of about 1e-14, so pairs that differ by the
    # same number of images would show a spread of that size, and a t-test of it against the
    # margin would be decided by the noise. Rounded to 1e-9 points (far below 100 / n_eval).
    diffs = [round(d, _DIGITS) for d in paired_points(a, b)]
    n = len(diffs)
    interval = seed_interval(diffs, TOST_CONFIDENCE)
    mean = interval.mean
    if n < 2:
        return Equivalence(mean, math.nan, math.nan, n, margin, math.nan, math.nan)
    if len(set(diffs)) == 1:  # every pair differs by the same amount: nothing to test against
        # (the mean of equal values can still come out a rounding away from them)
        mean = diffs[0]
        p = 0.0 if abs(mean) < margin else 1.0
        return Equivalence(mean, mean, mean, n, margin, p, p)
    p_low = float(stats.ttest_1samp(diffs, -margin, alternative="greater").pvalue)
    p_high = float(stats.ttest_1samp(diffs, margin, alternative="less").pvalue)
    return Equivalence(mean, interval.low, interval.high, n, margin, p_low, p_high)


@dataclass(frozen=True)
class EquivalenceComparison:
    """One candidate against the reference (reference - candidate), Holm-adjusted."""

    alternative: str  # the candidate's name, e.g. 'T1-SGD-0.01-ReLU'
    equivalence: Equivalence
    p_holm: float = math.nan  # over the family of comparisons with the same reference

    @property
    def equivalent(self) -> bool:
        """Shown within ±margin after the adjustment (nan: not shown)."""
        return self.p_holm < ALPHA

    def to_dict(self) -> dict:
        e = self.equivalence
        number = json_number
        return {"alternative": self.alternative, "estimate": number(e.estimate),
                "ci90": [number(e.low), number(e.high)], "n": e.n, "margin": e.margin,
                "p_low": number(e.p_low), "p_high": number(e.p_high), "p": number(e.p_value),
                "p_holm": number(self.p_holm), "equivalent": self.equivalent}  # fmt: skip


def equivalent_to(reference: Sequence[float], candidates: Sequence[tuple[str, Sequence[float]]],
                  margin: float) -> list[EquivalenceComparison]:  # fmt: skip
    """TOST of `reference` minus each candidate, Holm-adjusted over these comparisons; in the
    candidates' order."""
    found = [(name, tost(reference, values, margin)) for name, values in candidates]
    adjusted = holm([e.p_value for _, e in found])
    return [EquivalenceComparison(name, e, p)
            for (name, e), p in zip(found, adjusted, strict=True)]  # fmt: skip
