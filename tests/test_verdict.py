"""The verdict rules on constructed cases: where a published number lies, and paired tests."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from hpstudy.stats import equivalence as eq
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


def test_prediction_interval_for_one_run_matches_the_hand_computation():
    # mean 0.882; squared deviations 4, 4, 9, 16, 1 (x 1e-6): s^2 = 34e-6 / 4
    s = math.sqrt(34e-6 / 4)
    t4 = 2.7764451051977987  # Student's t, 4 degrees of freedom, 97.5th percentile
    half = t4 * s * math.sqrt(1 + 1 / 5)
    one = v.prediction_interval(SEEDS_5)
    assert one.mean == pytest.approx(0.882) and one.sd == pytest.approx(s)
    assert (one.low, one.high) == pytest.approx((0.882 - half, 0.882 + half), abs=1e-12)
    assert half == pytest.approx(0.008867, abs=1e-6)
    mean = v.seed_interval(SEEDS_5)  # the mean's interval is narrower by sqrt(n + 1)
    assert one.half == pytest.approx(mean.half * math.sqrt(6))
    assert not v.prediction_interval([0.88]).known and not v.prediction_interval([]).known


def test_a_published_run_is_judged_against_the_prediction_interval():
    one = v.prediction_interval(SEEDS_5)  # about [87.31, 89.09]
    assert v.cell_verdict(88.9, one, diverged=False) == v.CONSISTENT
    assert v.place(88.9, v.seed_interval(SEEDS_5)) == v.ABOVE  # the old yardstick said above
    assert v.cell_verdict(89.5, one, diverged=False) == v.ABOVE
    assert v.cell_verdict(86.0, one, diverged=False) == v.BELOW
    assert v.cell_verdict(88.2, one, diverged=True) == v.DIVERGED  # overrides any interval
    assert v.cell_verdict(88.2, v.prediction_interval([0.88]), diverged=False) == ""


def test_at_chance_is_the_best_accuracy_within_five_points_of_one_over_classes():
    assert v.at_chance(0.10, 10) and v.at_chance(0.15, 10) and v.at_chance(math.nan, 10)
    assert not v.at_chance(0.1501, 10) and not v.at_chance(0.19, 10)  # 19%: diverged, not chance
    assert v.at_chance(0.55, 2) and not v.at_chance(0.56, 2)


def test_failed_to_train_is_below_halfway_from_chance_to_perfect():
    # Adam at lr 0.05 in the shipped run: seeds at 19-49%, no NaN; the worst setting that
    # trains (Tanh) is at 79%.
    assert all(v.failed_to_train(a, 10) for a in (0.10, 0.1912, 0.4858, 0.5499, math.nan))
    assert not any(v.failed_to_train(a, 10) for a in (0.55, 0.7914, 0.88))
    assert v.failed_to_train(0.74, 2) and not v.failed_to_train(0.75, 2)  # 1/2 + 1/4


def test_holm_matches_the_textbook_example():
    # Holm (1979) as on Wikipedia: p = .01, .04, .03, .005 at alpha .05 rejects H1 and H4 only.
    adjusted = v.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]
    assert v.holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1, and monotone
    out = v.holm([0.01, math.nan, 0.02])  # nan: no test, not a member of the family
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert v.holm([]) == []


WINNER = [0.890, 0.893, 0.888, 0.895, 0.891]
WORSE = [x - 0.02 + 0.001 * i for i, x in enumerate(WINNER)]
TIED = [0.891, 0.889, 0.890, 0.893, 0.892]
BETTER = [x + 0.02 - 0.001 * i for i, x in enumerate(WINNER)]


def _claim(*others):
    return v.judge_claims([v.BestSpec("II", "Adam wins", ("Adam", WINNER), list(others))])[0]


def test_the_four_claim_verdicts():
    ok = _claim(("SGD", WORSE), ("RMSprop", WORSE[::-1]))
    assert ok.verdict == v.SUPPORTED and ok.ci95[0] > 0 and ok.n == 5
    assert len(ok.holds) == 2 and not ok.fails and not ok.unclear
    part = _claim(("SGD", WORSE), ("RMSprop", TIED))
    assert part.verdict == v.PARTLY and "RMSprop" in part.test
    assert part.holds[0].startswith("Adam beats SGD") and "RMSprop" in part.unclear[0]
    assert part.ci95[0] < 0 < part.ci95[1]  # shown: the comparison it does not win
    bad = _claim(("SGD", BETTER), ("RMSprop", WORSE))
    assert bad.verdict == v.CONTRADICTED and bad.ci95[1] < 0 and "SGD" in bad.test
    assert bad.fails[0].startswith("SGD beats Adam") and bad.holds[0].startswith("Adam beats")
    tie = _claim(("RMSprop", TIED))
    assert tie.verdict == v.INCONCLUSIVE and not tie.holds and not tie.fails
    lone = v.judge_claims([v.BestSpec("II", "", ("Adam", [0.9]), [("SGD", [0.1])])])[0]
    assert lone.verdict == v.INCONCLUSIVE  # one seed: no test, so no verdict
    assert math.isnan(lone.comparisons[0].p_holm)


def test_holm_runs_over_the_whole_family_of_claims():
    # Adam - SGD alone: p = 0.02, supported; five claims with such a comparison each: Holm
    # multiplies the smallest p by 5 (then 4, 3, ... kept monotone), and none survives.
    noise = [0.001, -0.0015, 0.0, 0.002, -0.001]
    weak = [x - 0.0025 + d for x, d in zip(WINNER, noise, strict=True)]
    alone = _claim(("SGD", weak))
    p = alone.comparisons[0].difference.p_value
    assert p == pytest.approx(stats.ttest_rel(WINNER, weak).pvalue)
    assert 0.01 < p < 0.05 and alone.verdict == v.SUPPORTED
    assert alone.comparisons[0].p_holm == pytest.approx(p)  # a family of one
    family = v.judge_claims(
        [v.BestSpec(str(i), "", ("Adam", WINNER), [("SGD", weak)]) for i in range(5)]
    )
    assert [c.comparisons[0].p_holm for c in family] == pytest.approx([5 * p] * 5)
    assert all(c.verdict == v.INCONCLUSIVE for c in family)
    strong = [x - 0.05 - 0.001 * i for i, x in enumerate(WINNER)]  # p ~ 1e-7
    mixed = v.judge_claims([v.BestSpec("II", "", ("Adam", WINNER), [("SGD", weak)]),
                            v.BestSpec("I", "", ("A", WINNER), [("B", strong)])])  # fmt: skip
    assert mixed[0].comparisons[0].p_holm == pytest.approx(p)  # the larger p: times 1
    assert mixed[1].comparisons[0].p_holm == pytest.approx(
        2 * mixed[1].comparisons[0].difference.p_value
    )


def test_a_claimed_accuracy_is_a_one_sample_test_in_the_same_family():
    above = v.judge_claims([v.ValueSpec("final", "", SEEDS_5, 89.5)])[0]
    assert above.verdict == v.CONTRADICTED and above.ci95[1] < 0
    assert above.estimate == pytest.approx(100 * np.mean(SEEDS_5) - 89.5)
    want = stats.ttest_1samp([100 * x for x in SEEDS_5], 89.5).pvalue
    assert above.comparisons[0].difference.p_value == pytest.approx(want)
    assert "89.5% is not reached" in above.fails[0]
    assert v.headline_phrase(above).startswith("89.5% is not reached (ours 88.2%")
    near = v.judge_claims([v.ValueSpec("final", "", SEEDS_5, 88.2)])[0]
    assert near.verdict == v.INCONCLUSIVE
    below = v.judge_claims([v.ValueSpec("final", "", SEEDS_5, 86.0)])[0]
    assert below.verdict == v.SUPPORTED  # ours exceeds the claim


def test_headline_phrases_say_what_fails_and_what_holds():
    bad = _claim(("SGD", BETTER), ("RMSprop", WORSE))
    assert v.headline_phrase(bad).startswith("Adam is not better than SGD (−")
    part = _claim(("SGD", WORSE), ("RMSprop", TIED))
    assert v.headline_phrase(part) == (
        "Adam beats SGD but is not distinguishable from RMSprop at n = 5"
    )
    ok = _claim(("SGD", WORSE), ("RMSprop", WORSE[::-1]))
    assert v.headline_phrase(ok).startswith("Adam beats all 2 alternatives (by +")


def test_one_t_interval_for_tables_verdicts_and_the_report():
    from hpstudy.report.report_tables import verdict as report_verdict
    from hpstudy.stats.tables import mean_ci

    cell, interval = mean_ci(SEEDS_5), v.seed_interval(SEEDS_5)
    assert (cell.mean, cell.half95) == (interval.mean, interval.half)  # the same bits
    assert cell.ci95 == [interval.low, interval.high]
    for paper in (86.0, 88.2, 100 * interval.high, 89.5):
        where = v.place(paper, interval)
        said = report_verdict(cell, paper)
        assert said == {"inside": "yes", "above": "no: paper higher",
                        "below": "no: paper lower"}[where]  # fmt: skip


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


# Equivalence (TOST): accuracies as fractions; differences, margins and intervals in points.
BASE = [0.880, 0.884, 0.879, 0.886, 0.881]


def _minus(points):
    """BASE minus `points` (one per seed, in percentage points)."""
    return [a - p / 100 for a, p in zip(BASE, points, strict=True)]


def test_tost_matches_the_hand_computation():
    # BASE - b = 0.1, 0.3, -0.1, 0.2, 0.0 pp: mean 0.1, s^2 = 0.10 / 4, se = sqrt(0.025 / 5)
    e = eq.tost(BASE, _minus([0.1, 0.3, -0.1, 0.2, 0.0]), margin=0.5)
    se = math.sqrt(0.025 / 5)
    assert e.estimate == pytest.approx(0.1) and e.n == 5 and e.margin == 0.5
    # H0 low: d <= -0.5, t = 0.6 / se = 8.485; H0 high: d >= 0.5, t = -0.4 / se = -5.657
    assert e.p_low == pytest.approx(stats.t.sf(0.6 / se, 4))
    assert e.p_high == pytest.approx(stats.t.sf(0.4 / se, 4))
    assert e.p_value == pytest.approx(0.0024063, abs=1e-6)  # the larger one: the high side
    t4_95 = 2.1318467863266495  # Student's t, 4 degrees of freedom, 95th percentile
    assert e.ci90 == pytest.approx([0.1 - t4_95 * se, 0.1 + t4_95 * se])
    assert e.low > -0.5 and e.high < 0.5  # TOST at 0.05 <=> the 90% interval inside ±margin


def test_tost_clearly_equivalent_and_clearly_not():
    close = eq.tost(BASE, _minus([0.05, -0.1, 0.1, 0.0, -0.05]), margin=0.5)
    assert close.p_value < 0.001 and -0.5 < close.low < close.high < 0.5
    # 1.7 pp below with wide noise, as T1 SGD against T4 Adam 0.001 measured: far from it
    far = eq.tost(BASE, _minus([0.9, 2.8, 1.2, 2.5, 1.3]), margin=0.5)
    assert far.estimate == pytest.approx(1.74) and far.p_value > 0.9 and far.low > 0.5
    # centred on 0 but noisy: not distinguishable (two-sided p large) and not equivalent either
    noisy = _minus([1.0, -1.2, 0.8, -0.9, 0.3])
    assert v.paired_difference(BASE, noisy).p_value > 0.5
    assert eq.tost(BASE, noisy, margin=0.5).p_value > 0.05
    assert eq.tost(BASE, noisy, margin=2.0).p_value < 0.05  # a wider margin admits it


def test_tost_needs_two_seeds_and_handles_no_spread():
    one = eq.tost([0.88], [0.88], margin=0.5)
    assert one.n == 1 and math.isnan(one.p_value) and math.isnan(one.low)
    dropped = eq.tost([0.88, math.nan, 0.87], [0.88, 0.86, math.nan], margin=0.5)
    assert dropped.n == 1 and math.isnan(dropped.p_value)  # nan pairs dropped
    (found,) = eq.equivalent_to([0.88], [("T1", [0.88])], margin=0.5)
    assert not found.equivalent and math.isnan(found.p_holm)  # not tested: not shown
    a = [0.5, 0.75, 0.875]  # dyadic: a - b is exactly 2**-7 = 0.78125 pp on every seed
    b = [x - 0.0078125 for x in a]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by a zero spread inside scipy
        same = eq.tost(a, a, margin=0.5)
        assert same.p_value == 0.0 and same.ci90 == [0.0, 0.0]
        assert eq.tost(a, b, margin=0.5).p_value == 1.0  # 0.78 pp, always: outside
        assert eq.tost(a, b, margin=1.0).p_value == 0.0  # inside
        assert eq.tost(a, b, margin=0.78125).p_value == 1.0  # on the margin is not inside
    with pytest.raises(ValueError, match="margin"):
        eq.tost(a, b, margin=0.0)


def test_tost_on_real_accuracies_that_differ_by_the_same_images_on_every_seed():
    """Accuracies are counts over 10,000 images, not dyadic fractions: 50 images fewer on every
    seed is exactly 0.5 pp, on the margin, so never shown equivalent within ±0.5 pp; float
    noise in a - b (about 1e-14 pp) must not pass for a spread that a t-test then judges."""
    correct = [8634, 8962, 8896, 8656, 8543]
    a = [c / 10_000 for c in correct]
    on_margin = eq.tost(a, [(c - 50) / 10_000 for c in correct], margin=0.5)
    assert on_margin.ci90 == [0.5, 0.5] and on_margin.p_value == 1.0
    inside = eq.tost(a, [(c - 49) / 10_000 for c in correct], margin=0.5)
    assert inside.p_value == 0.0
    (found,) = eq.equivalent_to(a, [("T1", [(c - 50) / 10_000 for c in correct])], margin=0.5)
    assert not found.equivalent


def test_equivalence_is_holm_adjusted_over_the_comparisons_with_the_reference():
    cases = [("near", _minus([0.1, 0.3, -0.1, 0.2, 0.0])),
             ("far", _minus([0.9, 2.8, 1.2, 2.5, 1.3])),
             ("close", _minus([0.05, -0.1, 0.1, 0.0, -0.05]))]  # fmt: skip
    found = eq.equivalent_to(BASE, cases, margin=0.5)
    assert [c.alternative for c in found] == ["near", "far", "close"]
    raw = [c.equivalence.p_value for c in found]
    assert [c.p_holm for c in found] == pytest.approx(v.holm(raw))
    assert found[0].p_holm == pytest.approx(2 * raw[0])  # second smallest of 3: times 2
    assert [c.equivalent for c in found] == [True, False, True]
    d = found[0].to_dict()
    assert d["ci90"] == pytest.approx(found[0].equivalence.ci90) and d["margin"] == 0.5
    assert d["p"] == pytest.approx(raw[0]) and d["equivalent"] is True


# The recommendation: the best mean, or a cheaper configuration shown equivalent to it.
T4_ADAM = [0.8895, 0.8905, 0.8847, 0.8753, 0.8877]  # measured (5 seeds): the best mean, 88.55%
T1_SGD = [0.8645, 0.8683, 0.8684, 0.8714, 0.8683]  # measured: 86.82%, the old rule's choice


def _result(topology, optimizer, accuracies, lr=0.001):
    from hpstudy.config.config import Config
    from hpstudy.tabulate.cells import PublishedCell
    from hpstudy.tabulate.findings import CellResult

    factors = {"topology": topology, "optimizer": optimizer, "lr": lr, "activation": "relu"}
    seeds = tuple(range(42, 42 + len(accuracies)))
    return CellResult(
        PublishedCell("I", "topology", "topology", str(topology), factors, 88.0),
        Config(**factors, seed=42), seeds, tuple(accuracies), ("complete",) * len(seeds),
        (10,) * len(seeds), v.cell_interval(accuracies, 10_000),
        v.prediction_interval(accuracies), "", (), False, tuple(accuracies),
    )  # fmt: skip


def test_a_cheaper_configuration_equivalent_within_the_margin_is_recommended():
    from hpstudy.tabulate.replication import recommend

    best = _result("T4", "adam", T4_ADAM)
    t1 = _result("T1", "sgd", [x - 0.0012 + d for x, d in  # 0.12 pp below, tight
                               zip(T4_ADAM, [0.0003, -0.0002, 0.0001, -0.0003, 0.0001],
                                   strict=True)])  # fmt: skip
    bigger = _result("T5", "sgd", [x - 0.0001 for x in T4_ADAM])  # equivalent but costlier
    rec = recommend([best, t1, bigger], margin=0.5)
    assert rec.cell is t1 and rec.best is best and rec.equivalent == (t1,)
    assert [r for r, _ in rec.comparisons] == [t1]  # only a cheaper one can replace the best
    d = rec.to_dict(5)
    assert d["config_id"] == "T1-SGD-0.001-ReLU" and d["margin"] == 0.5
    assert [e["config_id"] for e in d["equivalence"]] == ["T1-SGD-0.001-ReLU"]
    assert d["equivalence"][0]["equivalent"] and d["equivalence"][0]["ci90"][1] < 0.5
    assert "shown within ±0.5 pp of it at n = 5" in d["text"]
    assert "TOST" in d["rule"] and "±0.5 pp" in d["rule"]
    assert recommend([best, t1, bigger], margin=0.05).cell is best  # a narrower margin: not


def test_a_cheaper_configuration_1_7_points_below_with_wide_noise_is_not_recommended():
    from hpstudy.tabulate.replication import recommend

    best, t1 = _result("T4", "adam", T4_ADAM), _result("T1", "sgd", T1_SGD, lr=0.01)
    # what the old rule saw: not distinguishable from the best after Holm over 6 comparisons
    assert v.holm([v.paired_difference(T4_ADAM, T1_SGD).p_value] * 6)[0] > 0.05
    rec = recommend([t1, best], margin=0.5)
    assert rec.cell is best and rec.equivalent == () and rec.n_params == 242_762
    (cmp,) = [c for _, c in rec.comparisons]
    assert cmp.equivalence.estimate == pytest.approx(1.736) and not cmp.equivalent
    text = rec.text(5)
    assert "the best mean. No cheaper configuration is shown within ±0.5 pp of it at n = 5" in text
    assert "T1, SGD, 0.01, ReLU, is 1.74 pp below the best" in text
    alone = recommend([best, _result("T5", "sgd", T1_SGD)], margin=0.5)  # nothing cheaper
    assert alone.cell is best and "no configuration that trains is cheaper" in alone.text(5)
    short = recommend([_result("T4", "adam", T4_ADAM[:1]), _result("T1", "sgd", T4_ADAM[:1])],
                      margin=0.5)  # fmt: skip
    assert short.cell.config.topology == (256, 128, 64)  # one seed: nothing shown equivalent
    assert "not tested" in short.text(1)
