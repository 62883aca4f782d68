"""The reproduction verdict: each published number against where one run of ours would land,
each claim by paired tests, Holm-adjusted over the whole family of claims.

    >>> cell_verdict(89.5, prediction_interval(seeds), diverged=False)   # 'above'
    >>> diff = paired_difference(adam, sgd)    # same seeds: paired t-interval of adam - sgd
    >>> spec = BestSpec("II", "Adam is the best optimizer", ("Adam", adam),
    ...                 [("SGD", sgd), ("RMSprop", rmsprop)])
    >>> claims = judge_claims([spec, ValueSpec("final", "reaches 89.5%", final, 89.5)])
    >>> claims[0].verdict, claims[0].comparisons[0].p_holm
    >>> mcnemar(winner_mask, runner_up_mask)   # exact McNemar test on the same test images

Everything here is pure: numbers in, verdicts out. Accuracies are fractions in [0, 1];
published numbers and everything a verdict reports are in percent (points for differences);
`ci95` is always `[low, high]`.

A published number is one run (the paper's seed 42), so it is judged against our 95%
*prediction interval for one run* (`intervals.prediction_interval`): `consistent` inside it,
`above` or `below` outside, and `diverged` where any of our seeds diverged (NaN) or failed to
train (`failed_to_train`: at chance, or collapsed after a start); then our mean is not an
estimate of an accuracy, whatever its interval says. "Consistent" means
one of our runs could plausibly have given that number, never that the number is confirmed.

A claim is a family of comparisons (the claimed winner minus each alternative, paired over
shared seeds, two-sided paired t-test; for a claimed accuracy, a one-sample t-test against it).
The p-values of all comparisons of all claims are adjusted together with Holm's method
(`multiplicity.holm`): `supported` when the winner beats every alternative (adjusted p < 0.05,
positive), `contradicted` when some alternative beats it, `partly supported` when it beats some
and none beats it, `inconclusive` when no comparison is significant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from scipy import stats

from hpstudy.stats.intervals import (
    ABOVE,
    BELOW,
    CONFIDENCE,
    INSIDE,
    Interval,
    cell_interval,
    place,
    prediction_interval,
    sample_sd,
    seed_interval,
    wilson_interval,
)
from hpstudy.stats.multiplicity import holm

__all__ = [  # re-exported: the verdict's callers need one import
    "ABOVE",
    "BELOW",
    "CONFIDENCE",
    "INSIDE",
    "Interval",
    "cell_interval",
    "holm",
    "place",
    "prediction_interval",
    "sample_sd",
    "seed_interval",
    "wilson_interval",
]

ALPHA = 1 - CONFIDENCE
# Cell verdicts (one published number against one run of ours).
CONSISTENT, DIVERGED = "consistent", "diverged"
CELL_VERDICTS = (CONSISTENT, ABOVE, BELOW, DIVERGED)
# Claim verdicts.
SUPPORTED, PARTLY, CONTRADICTED, INCONCLUSIVE = (
    "supported", "partly supported", "contradicted", "inconclusive")  # fmt: skip
CLAIM_VERDICTS = (SUPPORTED, PARTLY, CONTRADICTED, INCONCLUSIVE)

# "At chance": a seed whose BEST accuracy over all its epochs is at most 1/classes + 5 points.
# A chance classifier's accuracy on 10,000 images has a binomial sd of 0.3 points, so even the
# best of 20 such evaluations stays within about 1 point of 1/classes; a network that learns
# anything on FashionMNIST is above 70% after one epoch. 5 points sits far from both, so the
# rule does not depend on where exactly the line is drawn.
CHANCE_MARGIN = 0.05
# "Failed to train": a seed whose BEST accuracy never got halfway from chance to perfect,
# 1/K + (1 - 1/K)/2 (55% for 10 classes). Adam at lr 0.05 on FashionMNIST blows up after an
# epoch or two without a NaN (seeds at 19-49%, training loss back at ln 10); every setting
# that trains is above 79% (a linear classifier reaches about 84%), so the line sits far from
# both. It assumes a task a working model learns well (true of FashionMNIST, MNIST, digits).
LEARNED_FRACTION = 0.5


def at_chance(accuracy: float, n_classes: int) -> bool:
    """Whether a seed's best accuracy (fraction) is at chance; a nan accuracy counts as chance
    (the seed never produced a usable epoch)."""
    return not accuracy > 1 / n_classes + CHANCE_MARGIN


def failed_to_train(accuracy: float, n_classes: int) -> bool:
    """Whether a seed's best accuracy stayed below halfway from chance to perfect (at chance,
    or collapsed after a start); nan counts as failed."""
    chance = 1 / n_classes
    return not accuracy >= chance + LEARNED_FRACTION * (1 - chance)


def cell_verdict(published: float, prediction: Interval, *, diverged: bool) -> str:
    """consistent / above / below against the prediction interval; diverged overrides;
    '' where there is no interval (fewer than two seeds)."""
    if diverged:
        return DIVERGED
    where = place(published, prediction)
    return CONSISTENT if where == INSIDE else where


@dataclass(frozen=True)
class Difference:
    """A difference in points with its 95% interval and two-sided p (nan where untestable)."""

    estimate: float  # mean difference, percentage points
    low: float
    high: float
    n: int  # seeds both sides finished (or seeds of a one-sample test)
    p_value: float

    @property
    def ci95(self) -> list[float]:
        return [self.low, self.high]

    def to_dict(self) -> dict:
        """As JSON: estimate, ci95, n, p (null where untestable)."""
        return {"estimate": json_number(self.estimate), "ci95": [json_number(self.low),
                json_number(self.high)], "n": self.n, "p": json_number(self.p_value)}  # fmt: skip


def paired_points(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a - b seed by seed in points (fractions in), pairs with a nan on either side dropped."""
    return [100 * (x - y) for x, y in zip(a, b, strict=True)
            if not (math.isnan(x) or math.isnan(y))]  # fmt: skip


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """a - b seed by seed (nan pairs dropped): paired t-interval and paired t-test, in points."""
    return _one_sample(paired_points(a, b))


def value_difference(values: Sequence[float], claimed: float) -> Difference:
    """Our seeds (fractions) minus a claimed accuracy (%): one-sample t-interval and t-test."""
    return _one_sample([100 * x - claimed for x in values if not math.isnan(x)])


def _one_sample(diffs: list[float]) -> Difference:
    """Mean of `diffs` (points) with the t-interval of `seed_interval` and a one-sample t-test
    against 0 (which for paired differences is the paired t-test)."""
    n = len(diffs)
    interval = seed_interval(diffs)
    if n < 2:
        return Difference(interval.mean, math.nan, math.nan, n, math.nan)
    if interval.sd == 0:  # every pair differs by the same amount: no noise left to test
        mean = interval.mean
        return Difference(mean, mean, mean, n, 0.0 if mean else 1.0)
    p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    return Difference(interval.mean, interval.low, interval.high, n, p)


@dataclass(frozen=True)
class Comparison:
    """One comparison of a claim: the claimed winner minus an alternative (points)."""

    alternative: str  # 'SGD', 'lr 0.001', or 'the claimed 89.5%'
    difference: Difference
    p_holm: float = math.nan  # Holm-adjusted over the whole claim family

    @property
    def beats(self) -> bool:  # the claim's side is better, after the adjustment
        return self.p_holm < ALPHA and self.difference.estimate > 0

    @property
    def beaten(self) -> bool:  # the alternative is better, after the adjustment
        return self.p_holm < ALPHA and self.difference.estimate < 0

    def to_dict(self) -> dict:
        return {"alternative": self.alternative, **self.difference.to_dict(),
                "p_holm": json_number(self.p_holm)}  # fmt: skip


@dataclass(frozen=True)
class BestSpec:
    """A claim that `winner` is the best of its table."""

    id: str
    text: str
    winner: tuple[str, Sequence[float]]  # (name, accuracy per seed)
    others: Sequence[tuple[str, Sequence[float]]]  # same seeds, same order


@dataclass(frozen=True)
class ValueSpec:
    """A claim that a configuration reaches `claimed` percent."""

    id: str
    text: str
    values: Sequence[float]  # accuracy per seed (fractions)
    claimed: float  # %


@dataclass(frozen=True)
class Claim:
    """One of the paper's conclusions, judged."""

    id: str
    text: str
    verdict: str  # one of CLAIM_VERDICTS
    test: str  # the test and correction, in words
    estimate: float  # points: the comparison that decides (see `judge`)
    ci95: list[float]  # points, of that comparison
    n: int
    comparisons: tuple[Comparison, ...] = ()
    holds: tuple[str, ...] = ()  # what the seeds show, e.g. 'T4 beats T1 (+0.33 pp)'
    fails: tuple[str, ...] = ()  # what they contradict, e.g. 'SGD beats Adam (+1.80 pp)'
    unclear: tuple[str, ...] = ()  # not distinguishable at this many seeds
    winner: str = ""  # BestSpec: the claimed winner's name ('Adam', 'lr 0.005')
    claimed: float | None = field(default=None)  # ValueSpec: the claimed accuracy (%)

    def to_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "verdict": self.verdict, "test": self.test,
                "estimate": json_number(self.estimate),
                "ci95": [json_number(v) for v in self.ci95],
                "n": self.n, "comparisons": [c.to_dict() for c in self.comparisons],
                "holds": list(self.holds), "fails": list(self.fails),
                "unclear": list(self.unclear)}  # fmt: skip


def claim_verdict(comparisons: Sequence[Comparison]) -> str:
    """The four verdicts from Holm-adjusted comparisons (see the module docstring)."""
    if any(c.beaten for c in comparisons):
        return CONTRADICTED
    n_beats = sum(c.beats for c in comparisons)
    if comparisons and n_beats == len(comparisons):
        return SUPPORTED
    return PARTLY if n_beats else INCONCLUSIVE


def judge_claims(specs: Sequence[BestSpec | ValueSpec]) -> list[Claim]:
    """Every comparison of every claim, Holm-adjusted together, then each claim's verdict."""
    raw: list[list[Comparison]] = []
    for spec in specs:
        if isinstance(spec, ValueSpec):
            diff = value_difference(spec.values, spec.claimed)
            raw.append([Comparison(f"the claimed {spec.claimed:g}%", diff)])
        else:
            values = spec.winner[1]
            raw.append([Comparison(alt, paired_difference(values, alt_values))
                        for alt, alt_values in spec.others])  # fmt: skip
    flat = [c for group in raw for c in group]
    adjusted = iter(holm([c.difference.p_value for c in flat]))
    m = sum(not math.isnan(c.difference.p_value) for c in flat)
    claims = []
    for spec, group in zip(specs, raw, strict=True):
        group = [Comparison(c.alternative, c.difference, next(adjusted)) for c in group]
        claims.append(_judge(spec, tuple(group), m))
    return claims


def _judge(spec: BestSpec | ValueSpec, comparisons: tuple[Comparison, ...], m: int) -> Claim:
    verdict = claim_verdict(comparisons)
    shown = _deciding(comparisons, verdict)
    d = shown.difference
    if isinstance(spec, ValueSpec):
        test = (
            f"one-sample t-test over {d.n} seeds of our accuracy minus the claimed "
            f"{spec.claimed:g}%; Holm-adjusted over the {m} comparisons of all claims"
        )
        holds, fails, unclear = _value_sentences(spec, comparisons[0])
        claimed, name = spec.claimed, ""
    else:
        name = spec.winner[0]
        test = (f"paired t-test over {d.n} shared seeds of {name} minus each alternative; "
                f"Holm-adjusted over the {m} comparisons of all claims; shown: {name} minus "
                f"{shown.alternative}, the one that decides")  # fmt: skip
        holds, fails, unclear = _best_sentences(name, comparisons)
        claimed = None
    return Claim(spec.id, spec.text, verdict, test, d.estimate, d.ci95, d.n, comparisons,
                 holds, fails, unclear, name, claimed)  # fmt: skip


def _deciding(comparisons: Sequence[Comparison], verdict: str) -> Comparison:
    """Contradicted: the alternative that beats the claim most clearly; otherwise the closest
    alternative the claim does not beat, or (supported) the closest of all."""
    if verdict == CONTRADICTED:
        return min((c for c in comparisons if c.beaten), key=lambda c: c.difference.high)
    open_ = [c for c in comparisons if not c.beats] or list(comparisons)
    return min(open_, key=lambda c: _nan_last(c.difference.estimate))


def _best_sentences(name: str, comparisons: Sequence[Comparison]):
    holds, fails, unclear = [], [], []
    for c in comparisons:
        d, p = c.difference, p_text(c.p_holm)
        if c.beats:
            holds.append(f"{name} beats {c.alternative} ({_pp(d.estimate)} pp, adjusted p {p})")
        elif c.beaten:
            fails.append(f"{c.alternative} beats {name} ({_pp(-d.estimate)} pp, "
                         f"adjusted p {p})")  # fmt: skip
        else:
            unclear.append(f"{name} vs {c.alternative}: not distinguishable at n = {d.n} "
                           f"({_pp(d.estimate)} pp, adjusted p {p})")  # fmt: skip
    return tuple(holds), tuple(fails), tuple(unclear)


def _value_sentences(spec: ValueSpec, c: Comparison):
    d, p = c.difference, p_text(c.p_holm)
    ours = 100 * seed_interval(spec.values).mean
    text = f"ours {ours:.2f}% ({_pp(d.estimate)} pp, adjusted p {p})"
    if c.beaten:
        return (), (f"{spec.claimed:g}% is not reached: {text}",), ()
    if c.beats:
        return (f"{spec.claimed:g}% is exceeded: {text}",), (), ()
    return (), (), (f"{spec.claimed:g}% is not distinguishable at n = {d.n}: {text}",)


def headline_phrase(claim: Claim) -> str:
    """One short phrase per claim for the headline sentence: what fails, else what holds."""
    cs = claim.comparisons
    if all(c.difference.n < 2 for c in cs):  # an unfinished run: nothing to test yet
        subject = f"{claim.claimed:g}%" if claim.claimed is not None else claim.winner
        return f"{subject}: fewer than 2 seeds, not tested"
    if claim.claimed is not None:
        d = cs[0].difference
        mean = claim.claimed + d.estimate
        ours = f"ours {mean:.1f}% [{claim.claimed + d.low:.1f}, {claim.claimed + d.high:.1f}]"
        if claim.verdict == CONTRADICTED:
            return f"{claim.claimed:g}% is not reached ({ours})"
        if claim.verdict == SUPPORTED:
            return f"{claim.claimed:g}% is exceeded ({ours})"
        return f"{claim.claimed:g}% is not distinguishable from ours at n = {d.n} ({ours})"
    name = claim.winner
    if claim.verdict == CONTRADICTED:
        c = min((c for c in cs if c.beaten), key=lambda c: c.difference.estimate)
        return f"{name} is not better than {c.alternative} ({_pp(c.difference.estimate)} pp)"
    beats = [c for c in cs if c.beats]
    ties = [c.alternative for c in cs if not c.beats]
    if claim.verdict == SUPPORTED:
        if len(beats) == 1:
            return f"{name} beats {beats[0].alternative} ({_pp(beats[0].difference.estimate)} pp)"
        low = min(c.difference.estimate for c in beats)
        return f"{name} beats all {len(beats)} alternatives (by {_pp(low)} pp or more)"
    n = cs[0].difference.n if cs else 0
    if claim.verdict == PARTLY:
        return (f"{name} beats {_and([c.alternative for c in beats])} but is not "
                f"distinguishable from {_and(ties)} at n = {n}")  # fmt: skip
    return f"{name} is not distinguishable from {_and(ties)} at n = {n}"


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two classifiers on the same images."""

    only_a: int  # images a got right and b wrong
    only_b: int
    p_value: float

    @property
    def distinguishable(self) -> bool:
        return self.p_value < ALPHA


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


def _pp(x: float) -> str:
    """'+1.48' / '−1.80' (a true minus sign) / '–' for nan."""
    return "–" if math.isnan(x) else f"{x:+.2f}".replace("-", "−")


def p_text(p: float) -> str:
    """A p-value as printed: '0.004', '< 0.001', '–' where untestable."""
    return "–" if math.isnan(p) else f"{p:.2g}" if p >= 0.001 else "< 0.001"


def json_number(x: float | None) -> float | None:
    """`x` for JSON, which has no NaN: None where it is missing or nan."""
    return None if x is None or math.isnan(x) else float(x)
