"""The verdict of a replication, from stored records alone: cells, claims, what to use, the leak.

    >>> replication = judge(study, store.records(), split, tests=tests, clean_split=clean_split)
    >>> replication.headline, replication.recommended.cell.config, replication.final_model.seed
    >>> final_record(replication, store.records(), split)   # the stored trial of the final model

What it returns is `hpstudy.tabulate.findings.Replication` (the data and replication.json); this
module holds the rules that fill it in.

Each published number (one run) is placed against our 95% prediction interval for one run;
each claim is judged by paired tests, Holm-adjusted over all claims (`hpstudy.stats.verdict`);
one headline sentence; the configuration to use (`recommended`: the best mean, or the cheapest
configuration shown equivalent to it within the study's `equivalence_margin`, by TOST,
`hpstudy.stats.equivalence`) and the final model (that configuration at the first seed, fixed
in advance). With the clean arms of `--with-clean`, the leak per configuration and pooled, split
in two: paper - clean = (paper - held-out) + (held-out - clean), where the held-out arm is the
paper's test-selected protocol on the clean run's training images (`held_out_split`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hpstudy.config.config import Config
from hpstudy.config.cost import n_parameters
from hpstudy.config.factors import (
    FACTORS,
    PAPER_FACTORS,
    config_text,
    factor_label,
    factors_key,
    value_of,
)
from hpstudy.config.study import Study
from hpstudy.stats import equivalence as eq
from hpstudy.stats import verdict as v
from hpstudy.storage import TrialRecord, trial_key
from hpstudy.tabulate.cells import ROMAN, PublishedCell, held_out_split, paper_cells
from hpstudy.tabulate.findings import (
    CellResult,
    FinalModel,
    LeakGap,
    PooledLeak,
    Recommended,
    Replication,
)
from hpstudy.tabulate.plans import replicate_groups


def judge(
    study: Study,
    records: Sequence[TrialRecord],
    split: dict,
    *,
    tests: dict[str, float] | None = None,
    clean_split: dict | None = None,
) -> Replication:
    """The verdict on every published cell and claim from stored records; with `clean_split`
    (the clean arm's split) also the leak."""
    groups = replicate_groups(study)
    n_test = split.get("n_test", 10_000)
    by_key = {r.key: r for r in records if r.status.is_finished}
    results = []
    for cell in paper_cells(study):
        group = [study.config(seed=s, **cell.factors) for s in study.seeds]
        found = [by_key[k] for c in group if (k := trial_key(c, split)) in by_key]
        results.append(_cell_result(cell, group[0], found, study.seeds, n_test,
                                    study.n_classes))  # fmt: skip
    claims = _claims(study, results)
    gaps, pooled = (), None
    if clean_split:
        gaps = tuple(_leak_gaps(groups, by_key, tests or {}, split, clean_split,
                                study.n_classes))  # fmt: skip
        pooled = _pooled_leak(groups, by_key, tests or {}, split, clean_split, study.n_classes)
    recommended = recommend(results, study.equivalence_margin)
    final = None
    if recommended is not None:
        seed = study.seeds[0]
        c = recommended.cell
        accuracy = c.accuracies[c.seeds.index(seed)] if seed in c.seeds else math.nan
        final = FinalModel(c, seed, accuracy)
    paper = _final_cell(study, results) if results else None
    return Replication(tuple(results), tuple(claims), tuple(_paper_notes(results)),
                       study.n_seeds, n_test, gaps, _headline(claims, results),
                       recommended, final, paper, pooled)  # fmt: skip


def final_record(replication: Replication, records: Sequence[TrialRecord],
                 split: dict) -> TrialRecord | None:  # fmt: skip
    """The stored trial of the final model (the recommended configuration, first seed), or None
    where it did not train to a usable result."""
    final = replication.final_model
    if final is None:
        return None
    key = trial_key(final.cell.config.replace(seed=final.seed), split)
    return next((r for r in records if r.key == key and r.is_usable), None)


def _cell_result(cell: PublishedCell, config: Config, records: list[TrialRecord],
                 seeds: Sequence[int], n_test: int, n_classes: int) -> CellResult:  # fmt: skip
    records = sorted(records, key=lambda r: r.seed)
    accuracies = tuple(r.best_accuracy for r in records)
    interval = v.cell_interval(accuracies, n_test)
    prediction = v.prediction_interval(accuracies)
    diverged = _diverged(records, n_classes)
    found = {r.seed: r.best_accuracy for r in records}
    return CellResult(
        cell, config, tuple(r.seed for r in records), accuracies,
        tuple(r.outcome.value if r.outcome else "" for r in records),
        tuple(r.epochs for r in records), interval, prediction,
        v.cell_verdict(cell.published, prediction, diverged=diverged),
        tuple(cell_flags(records, n_classes)), diverged,
        tuple(found.get(s, math.nan) for s in seeds),
    )  # fmt: skip


def _diverged(records: Sequence[TrialRecord], n_classes: int) -> bool:
    """Any seed diverged (NaN) or failed to train (`verdict.failed_to_train`)."""
    return any((r.outcome is not None and r.outcome.value == "diverged")
               or v.failed_to_train(r.best_accuracy, n_classes) for r in records)  # fmt: skip


def cell_flags(records: Sequence[TrialRecord], n_classes: int = 10) -> list[str]:
    """What a mean over these seeds would hide: divergence, chance level, the epoch cap."""
    n, flags = len(records), []
    diverged = sum(r.outcome is not None and r.outcome.value == "diverged" for r in records)
    chance = sum(v.at_chance(r.best_accuracy, n_classes) for r in records)
    failed = sum(v.failed_to_train(r.best_accuracy, n_classes) for r in records) - chance
    line = 100 / n_classes + 100 * v.LEARNED_FRACTION * (1 - 1 / n_classes)
    capped = sum(r.epochs >= r.config.max_epochs and r.best_epoch == r.epochs for r in records)
    if diverged:
        flags.append(f"{diverged} of {n} seeds diverged (a seed counts with its best epoch "
                     "before that, or not at all if it had none)")  # fmt: skip
    if chance:
        flags.append(f"{chance} of {n} seeds stayed at chance (best accuracy at most "
                     f"{100 / n_classes + 100 * v.CHANCE_MARGIN:g}%)")  # fmt: skip
    if failed:
        flags.append(f"{failed} of {n} seeds collapsed (best accuracy above chance but below "
                     f"{line:g}%, halfway from chance to perfect)")  # fmt: skip
    if capped:
        flags.append(f"{capped} of {n} seeds hit the {records[0].config.max_epochs}-epoch cap "
                     "still improving")  # fmt: skip
    return flags


def _claims(study: Study, results: list[CellResult]) -> list[v.Claim]:
    """The paper's claims (each table's winner is the best; the final accuracy), judged
    together: one Holm family."""
    specs: list[v.BestSpec | v.ValueSpec] = []
    for i, stage in enumerate(study.stages):
        cells = [r for r in results if r.cell.stage == stage.name]
        if not stage.published or len(cells) < 2:
            continue
        top = max(cells, key=lambda r: r.cell.published)
        others = [(r.cell.name, r.paired) for r in cells if r is not top]  # seed by seed
        noun = FACTORS[stage.factor].noun
        text = (f"{top.cell.name} is the best {noun} (Table {ROMAN[i]}: it beats "
                f"{', '.join(o for o, _ in others)})")  # fmt: skip
        specs.append(v.BestSpec(ROMAN[i], text, (top.cell.name, top.paired), others))
    if study.published_final is not None and results:
        final = _final_cell(study, results)
        labels = config_text(study.config(seed=0, **final.cell.factors))
        text = f"The final configuration ({labels}) reaches {study.published_final:g}%"
        specs.append(v.ValueSpec("final", text, final.accuracies, study.published_final))
    return v.judge_claims(specs)


def _headline(claims: Sequence[v.Claim], results: Sequence[CellResult]) -> str:
    """One sentence: what each claim comes to, then what diverges."""
    phrases = [v.headline_phrase(c) for c in claims]
    diverged = _distinct([r for r in results if r.verdict == v.DIVERGED])
    if diverged:
        phrases.append(_diverged_phrase([r.config for r in diverged]))
    if not phrases:
        return ""
    text = "; ".join(phrases) + "."
    return text[0].upper() + text[1:]


def _diverged_phrase(configs: Sequence[Config]) -> str:
    """'T4, Adam, ReLU at lr 0.05 and 0.1 fail to train (...)' (one factor varies), else the
    configurations one by one."""
    verb = "fails" if len(configs) == 1 else "fail"
    labels = [{f: factor_label(f, value_of(c, f)) for f in PAPER_FACTORS} for c in configs]
    varying = [f for f in PAPER_FACTORS if len({lab[f] for lab in labels}) > 1]
    if len(configs) > 1 and len(varying) == 1:
        f = varying[0]
        fixed = ", ".join(labels[0][g] for g in PAPER_FACTORS if g != f)
        name = "lr " if f == "lr" else ""
        values = [lab[f] for lab in labels]
        values = ", ".join(values[:-1]) + " and " + values[-1]
        return f"{fixed} at {name}{values} {verb} to train (diverged or collapsed)"
    return f"{'; '.join(config_text(c) for c in configs)} {verb} to train (diverged or collapsed)"


def _distinct(results: Sequence[CellResult]) -> list[CellResult]:
    """One result per configuration, in first-published order."""
    seen: dict[str, CellResult] = {}
    for r in results:
        seen.setdefault(r.config_id, r)
    return list(seen.values())


def recommend(results: Sequence[CellResult], margin: float) -> Recommended | None:
    """The configuration to use: the best mean among configurations that train, or a cheaper
    one shown equivalent to it within ±`margin` points (TOST of the best minus each cheaper
    configuration, paired over seeds, Holm-adjusted over those comparisons); of the best and
    the equivalent ones, the fewest parameters, then the higher mean."""
    trains = [r for r in _distinct(results) if not r.diverged and r.interval.n >= 1]
    trains = [r for r in trains if not math.isnan(r.interval.mean)]
    if not trains:
        return None
    best = max(trains, key=lambda r: r.interval.mean)
    cost = n_parameters(best.config)
    # only a cheaper configuration can replace the best: the family is those comparisons
    cheaper = [r for r in trains if n_parameters(r.config) < cost]
    found = eq.equivalent_to(best.paired, [(r.config_id, r.paired) for r in cheaper], margin)
    comparisons = tuple(zip(cheaper, found, strict=True))
    candidates = [best, *(r for r, c in comparisons if c.equivalent)]
    chosen = min(candidates, key=lambda r: (n_parameters(r.config), -r.interval.mean))
    return Recommended(chosen, best, comparisons, n_parameters(chosen.config), margin)


def _final_cell(study: Study, results: list[CellResult]) -> CellResult:
    """The paper's final configuration: the published winner of its last table."""
    last = [r for r in results if r.cell.stage == study.stages[-1].name]
    return max(last, key=lambda r: r.cell.published)


def _paper_notes(results: list[CellResult]) -> list[str]:
    """Where the paper gives one configuration two different numbers."""
    by_config: dict[tuple, list[CellResult]] = {}
    for r in results:
        by_config.setdefault(factors_key(r.cell.factors), []).append(r)
    notes = []
    for same in by_config.values():
        numbers = {r.cell.published for r in same}
        if len(numbers) > 1:
            where = " but ".join(f"{r.cell.published:g}% in Table {r.cell.table}" for r in same)
            labels = ", ".join(factor_label(f, same[0].cell.factors[f]) for f in PAPER_FACTORS)
            notes.append(f"The paper reports one configuration ({labels}) twice with different "
                         f"numbers: {where}. We measured it once per seed.")  # fmt: skip
    return notes


def _arms(group, by_key: dict, tests: dict, split: dict, clean_split: dict):
    """Per seed of one configuration: (paper's protocol, clean validation, clean test, held-out)
    accuracies (nan where missing), and whether every arm's every seed trains."""
    held_split = held_out_split(clean_split)
    leaky, val, test, held, records = [], [], [], [], []
    for config in group:
        record = by_key.get(trial_key(config, split))
        clean = by_key.get(trial_key(config, clean_split))
        other = by_key.get(trial_key(config, held_split))
        leaky.append(record.best_accuracy if record else math.nan)
        val.append(clean.best_accuracy if clean and clean.is_usable else math.nan)
        test.append(tests.get(clean.key, math.nan) if clean else math.nan)
        held.append(other.best_accuracy if other else math.nan)
        records += [r for r in (record, clean, other) if r is not None]
    return leaky, val, test, held, records


def _leak_gaps(groups, by_key: dict, tests: dict, split: dict, clean_split: dict,
               n_classes: int = 10):  # fmt: skip
    """Per configuration: leaky accuracy vs the clean run's test accuracy, seed by seed, and
    (with the held-out arm) the two parts of the gap."""
    for group in groups:
        leaky, val, test, held, records = _arms(group, by_key, tests, split, clean_split)
        if all(math.isnan(t) for t in test):
            continue
        trains = not _diverged(records, n_classes)
        if all(math.isnan(h) for h in held):
            yield LeakGap(group[0], v.seed_interval(leaky), v.seed_interval(val),
                          v.seed_interval(test), v.paired_difference(leaky, test),
                          trains=trains)  # fmt: skip
            continue
        yield LeakGap(group[0], v.seed_interval(leaky), v.seed_interval(val),
                      v.seed_interval(test), v.paired_difference(leaky, test),
                      v.seed_interval(held), v.paired_difference(held, test),
                      v.paired_difference(leaky, held), trains)  # fmt: skip


def _pooled_leak(groups, by_key: dict, tests: dict, split: dict, clean_split: dict,
                 n_classes: int = 10) -> PooledLeak | None:  # fmt: skip
    """The gap and its parts over every (configuration, seed) pair of the configurations
    that train in every arm; paired t over the pairs."""
    leaky_all, test_all, held_all, n_configs = [], [], [], 0
    for group in groups:
        leaky, _, test, held, records = _arms(group, by_key, tests, split, clean_split)
        if all(math.isnan(t) for t in test) or _diverged(records, n_classes):
            continue
        n_configs += 1
        leaky_all += leaky
        test_all += test
        held_all += held
    if not n_configs:
        return None
    total = v.paired_difference(leaky_all, test_all)
    sizes = split.get("n_train", 60_000), clean_split.get("n_train", 54_000)
    if all(math.isnan(h) for h in held_all):
        return PooledLeak(total, None, None, n_configs, *sizes)
    # the parts over the same pairs as the total (a pair missing in any arm is left out)
    keep = [
        i
        for i in range(len(held_all))
        if not any(math.isnan(a[i]) for a in (leaky_all, test_all, held_all))
    ]
    leaky_k, test_k, held_k = ([a[i] for i in keep] for a in (leaky_all, test_all, held_all))
    return PooledLeak(v.paired_difference(leaky_k, test_k), v.paired_difference(held_k, test_k),
                      v.paired_difference(leaky_k, held_k), n_configs, *sizes)  # fmt: skip
