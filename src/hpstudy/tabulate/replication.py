"""The verdict of a replication, from stored records alone: cells, claims, what to use, the leak.

    >>> replication = judge(study, store.records(), split, tests=tests, clean_split=clean_split)
    >>> replication.cells[0].verdict, replication.claims[0].verdict  # 'consistent', 'contradicted'
    >>> replication.headline, replication.recommended.cell.config, replication.final_model.seed
    >>> json.dump(replication.to_dict(), f)                           # replication.json
    >>> final_record(replication, store.records(), split)   # the stored trial of the final model

Each published number (one run) is placed against our 95% prediction interval for one run;
each claim is judged by paired tests, Holm-adjusted over all claims (`hpstudy.stats.verdict`);
one headline sentence; the configuration to use (`recommended`: the best mean, or the cheapest
the seeds cannot tell from it) and the final model (that configuration at the first seed, fixed
in advance). With the clean arms of `--with-clean`, the leak per configuration and pooled, split
in two: paper - clean = (paper - held-out) + (held-out - clean), where the held-out arm is the
paper's test-selected protocol on the clean run's training images (`held_out_split`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
from hpstudy.stats import verdict as v
from hpstudy.storage import TrialRecord, trial_key
from hpstudy.tabulate.cells import ROMAN, PublishedCell, config_id, held_out_split, paper_cells
from hpstudy.tabulate.plans import replicate_groups

SCHEMA_VERSION = 2  # replication.json; 2 added the prediction interval, Holm, headline, ...


def _config_dict(config: Config) -> dict:
    return {k: val for k, val in config.to_dict().items() if k != "seed"}


@dataclass(frozen=True)
class CellResult:
    """A published number against our seeds."""

    cell: PublishedCell
    config: Config  # the first seed's configuration
    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]  # best test accuracy per seed (fractions), the paper's metric
    outcomes: tuple[str, ...]
    epochs: tuple[int, ...]
    interval: v.Interval  # of our mean: t over seeds (Wilson for one seed)
    prediction: v.Interval  # where one new run of ours would land
    verdict: str  # consistent, above, below, diverged ('' without an interval)
    flags: tuple[str, ...]  # "2 of 5 seeds diverged", "hit the epoch cap while improving", ...
    diverged: bool = False  # a seed diverged or stayed at chance
    # one per study seed, nan where that seed has no finished trial: what paired tests pair
    paired: tuple[float, ...] = ()

    @property
    def config_id(self) -> str:
        return config_id(self.config)

    def to_dict(self) -> dict:
        return {
            "table": self.cell.table,
            "row": self.cell.row,
            "config": _config_dict(self.config),
            "config_id": self.config_id,
            "published": self.cell.published,
            "mean": _pct(self.interval.mean),
            "ci95": [_pct(self.interval.low), _pct(self.interval.high)],
            "interval": self.interval.method,
            "prediction95": [_pct(self.prediction.low), _pct(self.prediction.high)],
            "sd": _pct(self.prediction.sd),
            "n": self.interval.n if len(self.seeds) > 1 else len(self.seeds),
            "seeds": list(self.seeds),
            "accuracies": [_pct(a) for a in self.accuracies],
            "min": _pct(min(self.accuracies, default=math.nan)),
            "max": _pct(max(self.accuracies, default=math.nan)),
            "outcomes": list(self.outcomes),
            "epochs": list(self.epochs),
            "verdict": self.verdict,
            "flags": list(self.flags),
        }


@dataclass(frozen=True)
class Recommended:
    """The configuration to use: the best by mean, or the cheapest the seeds cannot tell from
    it (Holm-adjusted paired t-tests of the best against every other configuration)."""

    cell: CellResult  # the chosen configuration's results
    best: CellResult  # the best by mean (the same cell when nothing cheaper ties it)
    ties: tuple[tuple[CellResult, v.Comparison], ...]  # not distinguishable from the best
    n_params: int

    def text(self, n_seeds: int) -> str:
        c, best, k = self.cell, self.best, len(self.ties)
        said = (f"{config_text(c.config)}: {_p(100 * c.interval.mean)}% mean, 95% interval "
                f"[{_p(100 * c.interval.low)}, {_p(100 * c.interval.high)}], "
                f"{self.n_params:,} parameters")  # fmt: skip
        others = f"{k} configuration{'s' if k != 1 else ''}"
        if best is c and not k:
            return said + "; the best mean, distinguishable from every other configuration."
        if best is c:
            return (said + f"; the best mean, and the cheapest of it and the {others} not "
                    f"distinguishable from it at n = {n_seeds}.")  # fmt: skip
        return (said + f"; the cheapest of the best mean, {config_text(best.config)} "
                f"({_p(100 * best.interval.mean)}%), and the {others} not distinguishable "
                f"from it at n = {n_seeds}.")  # fmt: skip

    def to_dict(self, n_seeds: int) -> dict:
        c = self.cell
        return {
            "config": _config_dict(c.config), "config_id": c.config_id,
            "mean": _pct(c.interval.mean), "ci95": [_pct(c.interval.low), _pct(c.interval.high)],
            "prediction95": [_pct(c.prediction.low), _pct(c.prediction.high)],
            "n_params": self.n_params,
            "best_by_mean": {"config_id": self.best.config_id,
                             "mean": _pct(self.best.interval.mean)},
            "not_distinguishable": [{"config_id": t.config_id, **cmp.to_dict()}
                                    for t, cmp in self.ties],
            "rule": ("the best mean; among the configurations not distinguishable from it at "
                     f"n = {n_seeds} (paired t-test, Holm-adjusted over the comparisons with "
                     "the best, p >= 0.05), the one with the fewest parameters; diverged "
                     "configurations excluded"),
            "text": self.text(n_seeds),
        }  # fmt: skip


@dataclass(frozen=True)
class FinalModel:
    """The recommended configuration at the first seed: fixed in advance, never the best seed."""

    cell: CellResult
    seed: int
    accuracy: float  # that seed's test accuracy (fraction; the paper's metric), nan if missing

    def to_dict(self) -> dict:
        c = self.cell
        return {
            "config": _config_dict(c.config),
            "config_id": c.config_id,
            "seed": self.seed,
            "test_accuracy": _pct(self.accuracy),
            "mean": _pct(c.interval.mean),
            "ci95": [_pct(c.interval.low), _pct(c.interval.high)],
            "rule": "the recommended configuration at the first seed, fixed in advance",
        }


@dataclass(frozen=True)
class LeakGap:
    """One configuration under the paper's protocol and under the clean one, same seeds."""

    config: Config  # the first seed's
    leaky: v.Interval  # best test accuracy, epoch chosen on test (60,000 training images)
    clean_validation: v.Interval  # best validation accuracy, epoch chosen on validation
    clean_test: v.Interval  # test accuracy read once, at that epoch
    gap: v.Difference  # leaky minus clean test, paired over seeds, in points
    held_out: v.Interval | None = None  # test-selected, trained on the clean run's 54,000
    selection: v.Difference | None = None  # held-out minus clean test: choosing on test
    size: v.Difference | None = None  # leaky minus held-out: 60,000 vs 54,000 images
    trains: bool = True  # no arm's seed diverged or stayed at chance

    def to_dict(self) -> dict:
        out = {
            "config": _config_dict(self.config), "config_id": config_id(self.config),
            "leaky": _interval(self.leaky), "clean_validation": _interval(self.clean_validation),
            "clean_test": _interval(self.clean_test),
            "gap": _difference(self.gap, "paired t-interval (95%) over shared seeds"),
            "trains": self.trains,
        }  # fmt: skip
        if self.held_out is not None:
            out["held_out"] = _interval(self.held_out)
            out["selection"] = _difference(self.selection, "paired t over shared seeds")
            out["size"] = _difference(self.size, "paired t over shared seeds")
        return out


@dataclass(frozen=True)
class PooledLeak:
    """The leak over every configuration that trains and every seed: one number and its parts."""

    total: v.Difference  # paper's protocol minus clean test, points
    selection: v.Difference | None  # held-out minus clean test (None without the third arm)
    size: v.Difference | None  # paper's protocol minus held-out
    n_configs: int
    n_train: int = 60_000  # training images of the paper's protocol
    n_train_clean: int = 54_000  # of the clean and held-out arms

    def to_dict(self) -> dict:
        method = (f"mean over {self.total.n} (configuration, seed) pairs of {self.n_configs} "
                  "configurations that train (no seed diverged or failed to train in any "
                  "arm); 95% t-interval and two-sided paired t-test over those pairs, "
                  "which treats them as independent (they share seeds and data, so the interval "
                  "is if anything too narrow)")  # fmt: skip
        out = {"total": _difference(self.total, method), "n_configs": self.n_configs,
               "n_train": self.n_train, "n_train_clean": self.n_train_clean}  # fmt: skip
        if self.selection is not None:
            selection = (f"held-out minus clean test: the same {self.n_train_clean:,} training "
                         "images, the epoch chosen on test instead of validation")  # fmt: skip
            out["selection"] = _difference(self.selection, selection)
            out["size"] = _difference(self.size, "paper's protocol minus held-out: both choose "
                                      f"on test, trained on {self.n_train:,} vs "
                                      f"{self.n_train_clean:,} images")  # fmt: skip
        return out


@dataclass(frozen=True)
class Replication:
    """The whole verdict: cells, claims, headline, what to use, and notes on the paper itself."""

    cells: tuple[CellResult, ...]
    claims: tuple[v.Claim, ...]
    notes: tuple[str, ...]  # e.g. the paper's own inconsistencies
    n_seeds: int
    n_test: int
    leak: tuple[LeakGap, ...] = ()  # `--with-clean`: leaky minus clean test accuracy per cell
    headline: str = ""
    recommended: Recommended | None = None
    final_model: FinalModel | None = None
    paper_choice: CellResult | None = None  # the paper's final configuration, our numbers
    pooled_leak: PooledLeak | None = None

    @property
    def counts(self) -> dict:
        """Verdicts over the published numbers and over the distinct configurations;
        'unmeasured': fewer than two finished seeds (an unfinished run)."""
        numbers = {k: sum(c.verdict == k for c in self.cells) for k in v.CELL_VERDICTS}
        numbers["unmeasured"] = sum(not c.verdict for c in self.cells)
        by_config: dict[str, list[CellResult]] = {}
        for c in self.cells:
            by_config.setdefault(c.config_id, []).append(c)
        configs = {"consistent": 0, "outside": 0, "diverged": 0, "unmeasured": 0}
        for same in by_config.values():
            if any(c.verdict == v.DIVERGED for c in same):
                configs["diverged"] += 1
            elif any(not c.verdict for c in same):
                configs["unmeasured"] += 1
            elif all(c.verdict == v.CONSISTENT for c in same):
                configs["consistent"] += 1
            else:
                configs["outside"] += 1
        return {"numbers": {**numbers, "total": len(self.cells)},
                "configurations": {**configs, "total": len(by_config)}}  # fmt: skip

    def to_dict(self) -> dict:
        paper = self.paper_choice
        return {
            "schema_version": SCHEMA_VERSION,
            "n_seeds": self.n_seeds,
            "n_test": self.n_test,
            "headline": self.headline,
            "counts": self.counts,
            "recommended": self.recommended.to_dict(self.n_seeds) if self.recommended else None,
            "final_model": self.final_model.to_dict() if self.final_model else None,
            "paper_choice": None if paper is None else {
                "config": _config_dict(paper.config), "config_id": paper.config_id,
                "mean": _pct(paper.interval.mean),
                "ci95": [_pct(paper.interval.low), _pct(paper.interval.high)]},
            "cells": [c.to_dict() for c in self.cells],
            "claims": [c.to_dict() for c in self.claims],
            "notes": list(self.notes),
            "leak": [g.to_dict() for g in self.leak],
            "leak_pooled": self.pooled_leak.to_dict() if self.pooled_leak else None,
        }  # fmt: skip


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
    recommended = _recommend(results)
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


def _recommend(results: Sequence[CellResult]) -> Recommended | None:
    """The best mean among configurations that train; the cheapest the seeds cannot tell from it
    (paired t-tests of the best against each, Holm-adjusted over those comparisons)."""
    trains = [r for r in _distinct(results) if not r.diverged and r.interval.n >= 1]
    trains = [r for r in trains if not math.isnan(r.interval.mean)]
    if not trains:
        return None
    best = max(trains, key=lambda r: r.interval.mean)
    others = [r for r in trains if r is not best]
    diffs = [v.paired_difference(best.paired, r.paired) for r in others]
    adjusted = v.holm([d.p_value for d in diffs])
    ties = tuple(
        (r, v.Comparison(r.config_id, d, p))
        for r, d, p in zip(others, diffs, adjusted, strict=True)
        if not (p < v.ALPHA)
    )  # untestable (nan) counts as not distinguishable
    candidates = [best, *(r for r, _ in ties)]
    chosen = min(candidates, key=lambda r: (n_parameters(r.config), -r.interval.mean))
    return Recommended(chosen, best, ties, n_parameters(chosen.config))


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


def _interval(i: v.Interval) -> dict:
    return {"mean": _pct(i.mean), "ci95": [_pct(i.low), _pct(i.high)], "n": i.n}


def _difference(d: v.Difference, test: str) -> dict:
    return {"estimate": _num(d.estimate), "ci95": [_num(x) for x in d.ci95], "n": d.n,
            "p": _num(d.p_value), "test": test}  # fmt: skip


def _p(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.2f}"


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def _pct(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(100 * x, 4)
