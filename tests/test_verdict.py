"""The verdict rules on constructed cases: where a published number lies, and paired tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hpstudy.stats import verdict as v

SEEDS_5 = [0.880, 0.884, 0.879, 0.886, 0.881]  # mean 0.882, t-interval about ±0.37 pp


def test_seed_interval_is_the_t_interval_and_places_published_numbers():
    interval = v.seed_interval(SEEDS_5)
    low, high = stats.t.interval(0.95, 4, loc=np.mean(SEEDS_5), scale=stats.sem(SEEDS_5))
    assert interval.low == pytest.approx(low) and interval.high == pytest.approx(high)
    assert interval.n == 5 and interval.method == "t-interval over 5 seeds"
    assert v.place(88.2, interval) == v.INSIDE
    assert v.place(89.5, interval) == v.ABOVE  # the paper reports more than we measure
    assert v.place(86.0, interval) == v.BELOW
    assert v.place(100 * high + 0.001, interval) == v.ABOVE
    assert v.place(100 * high - 0.001, interval) == v.INSIDE


def test_one_seed_gets_the_wilson_interval_of_the_test_images():
    interval = v.cell_interval([0.8812], 10_000)
    ci = stats.binomtest(8812, 10_000).proportion_ci(0.95, method="wilson")
    assert (interval.low, interval.high) == pytest.approx((ci.low, ci.high))
    assert interval.method == "Wilson, 10,000 test images"
    assert 0.0055 < (interval.high - interval.low) / 2 < 0.0075  # about ±0.63 pp at 88%
    assert v.place(88.5, interval) == v.INSIDE and v.place(89.5, interval) == v.ABOVE
    assert not v.cell_interval([], 10_000).known and v.place(89.0, v.seed_interval([])) == ""


def test_paired_difference_uses_the_pairs_not_the_two_spreads():
    # Large seed-to-seed spread, but b is always 0.4 pp below a: significant when paired.
    a = [0.86, 0.89, 0.87, 0.90, 0.88]
    b = [x - 0.004 + d for x, d in zip(a, [0.0005, -0.0005, 0.0, 0.0003, -0.0003], strict=True)]
    diff = v.paired_difference(a, b)
    assert diff.estimate == pytest.approx(0.4) and diff.n == 5
    assert diff.low > 0 and diff.p_value < 0.001
    assert diff.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    # the unpaired intervals overlap completely, so a naive comparison would call it a tie
    assert v.seed_interval(b).high > v.seed_interval(a).low


def test_paired_difference_inside_the_noise_is_not_significant():
    a = [0.881, 0.884, 0.879, 0.886, 0.880]
    b = [0.884, 0.880, 0.882, 0.881, 0.883]
    diff = v.paired_difference(a, b)
    assert diff.low < 0 < diff.high and diff.p_value > 0.05
    one = v.paired_difference([0.9], [0.8])
    assert one.n == 1 and math.isnan(one.low)
    assert v.paired_difference([0.9, math.nan], [0.8, 0.7]).n == 1  # nan pairs dropped


def test_judge_best_supported_contradicted_inconclusive():
    winner = [0.890, 0.893, 0.888, 0.895, 0.891]
    clearly_worse = [x - 0.02 + 0.001 * i for i, x in enumerate(winner)]
    tied = [0.891, 0.889, 0.890, 0.893, 0.892]
    clearly_better = [x + 0.02 for x in winner]
    ok = v.judge_best("II", "Adam wins", ("Adam", winner), [("SGD", clearly_worse)])
    assert ok.verdict == v.SUPPORTED and ok.ci95[0] > 0 and ok.n == 5
    tie = v.judge_best("II", "Adam wins", ("Adam", winner),
                       [("SGD", clearly_worse), ("RMSprop", tied)])  # fmt: skip
    assert tie.verdict == v.INCONCLUSIVE and "RMSprop" in tie.test
    assert tie.ci95[0] < 0 < tie.ci95[1]
    bad = v.judge_best("II", "Adam wins", ("Adam", winner),
                       [("SGD", clearly_better), ("RMSprop", tied)])  # fmt: skip
    assert bad.verdict == v.CONTRADICTED and bad.ci95[1] < 0 and "SGD" in bad.test
    lone = v.judge_best("II", "Adam wins", ("Adam", [0.9]), [("SGD", [0.1])])
    assert lone.verdict == v.INCONCLUSIVE  # one seed: no interval, so no verdict


def test_judge_value_against_a_published_number():
    assert v.judge_value("final", "", SEEDS_5, 88.2, 10_000).verdict == v.SUPPORTED
    assert v.judge_value("final", "", SEEDS_5, 86.0, 10_000).verdict == v.SUPPORTED  # exceeds
    below = v.judge_value("final", "", SEEDS_5, 89.5, 10_000)
    assert below.verdict == v.CONTRADICTED and below.ci95[1] < 0
    assert below.estimate == pytest.approx(100 * np.mean(SEEDS_5) - 89.5)


def test_mcnemar_counts_discordant_images_and_tests_them_exactly():
    rng = np.random.default_rng(0)
    a = rng.random(10_000) < 0.88
    b = a.copy()
    flip = np.flatnonzero(a)[:60]  # b misses 60 images a gets right, and gets 20 a misses
    b[flip] = False
    b[np.flatnonzero(~a)[:20]] = True
    test = v.mcnemar(a, b)
    assert (test.only_a, test.only_b) == (60, 20)
    assert test.p_value == pytest.approx(stats.binomtest(60, 80, 0.5).pvalue)
    assert test.distinguishable
    c = a.copy()  # 15 flips each way: the same accuracy, a coin toss
    c[np.flatnonzero(a)[:15]] = False
    c[np.flatnonzero(~a)[:15]] = True
    close = v.mcnemar(a, c)
    assert (close.only_a, close.only_b) == (15, 15) and not close.distinguishable
    assert v.mcnemar(a, a).p_value == 1.0
    with pytest.raises(ValueError):
        v.mcnemar(a, a[:10])
