"""The replication protocol: every number the paper published, re-measured over seeds.

    >>> protocol = ReplicateProtocol(load_study("replicate"), trainer)
    >>> tables = protocol.run()            # our staged path (one seed), then Tables I-IV
    >>> verdict = protocol.replication(trainer.store.records())
    >>> verdict.cells[0].verdict, verdict.claims[0].verdict      # 'inside', 'inconclusive'

The paper carried its own winners forward (T4, then Adam, then 0.005), so its Tables II-IV were
measured on configurations a staged search with another seed never trains. This protocol trains
exactly those configurations, along the paper's path, once per seed, under the paper's metric
(best test accuracy, early stopping on test, patience 3, at most 20 epochs, batch 64). A
configuration in two tables is one trial per seed. Beside it runs the paper's staged search with
one seed, as the paper did (`[replicate] staged_seeds`), on the same store: its trials share keys
with the replication's, so nothing is trained twice.

The verdict (`Replication`) places each published number inside, above or below our 95%
interval and judges each of the paper's conclusions with a paired test over the shared seeds
(`hpstudy.stats.verdict`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from hpstudy.config.config import Config
from hpstudy.config.factors import FACTORS, PAPER_FACTORS, config_text, factor_label, factors_key
from hpstudy.config.study import ProtocolKind, Stage, Study
from hpstudy.protocols.base import Protocol, evaluate_test_once, make_row, pick_winner
from hpstudy.protocols.events import StageFinished, StageStarted
from hpstudy.protocols.staged import StagedProtocol
from hpstudy.stats import verdict as v
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord, trial_key

ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII")
CHANCE_MARGIN = 0.05  # a best accuracy below 1/classes + this is "at chance"
N_CLASSES = 10


@dataclass(frozen=True)
class PublishedCell:
    """One number of the paper's tables and the configuration it was measured on."""

    table: str  # "I".."IV"
    stage: str  # the stage (and table) name in the study file
    factor: str
    row: str  # the paper's row label: "T4", "Adam", "0.005", "ReLU"
    factors: dict  # topology, optimizer, lr, activation
    published: float  # %


def paper_cells(study: Study) -> list[PublishedCell]:
    """Every published number along the paper's own path (each stage's published winner is
    carried forward, as the paper did)."""
    base, cells = dict(study.start), []
    for i, stage in enumerate(study.stages):
        for value, published in zip(stage.values, stage.published or (), strict=False):
            cells.append(PublishedCell(ROMAN[i], stage.name, stage.factor,
                                       factor_label(stage.factor, value),
                                       {**base, stage.factor: value}, published))  # fmt: skip
        if stage.published:
            best = max(range(len(stage.values)), key=lambda j: stage.published[j])
            base = {**base, stage.factor: stage.values[best]}
    return cells


@dataclass(frozen=True)
class CellResult:
    """A published number against our seeds."""

    cell: PublishedCell
    config: Config  # the first seed's configuration
    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]  # best test accuracy per seed (fractions), the paper's metric
    outcomes: tuple[str, ...]
    epochs: tuple[int, ...]
    interval: v.Interval
    verdict: str  # inside, above, below ('' without an interval)
    flags: tuple[str, ...]  # "2 of 5 seeds diverged", "hit the epoch cap while improving", ...

    def to_dict(self) -> dict:
        return {
            "table": self.cell.table,
            "row": self.cell.row,
            "config": {k: val for k, val in self.config.to_dict().items() if k != "seed"},
            "published": self.cell.published,
            "mean": _pct(self.interval.mean),
            "ci95": [_pct(self.interval.low), _pct(self.interval.high)],
            "interval": self.interval.method,
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
class Replication:
    """The whole verdict: cells, claims, and notes on the paper itself."""

    cells: tuple[CellResult, ...]
    claims: tuple[v.Claim, ...]
    notes: tuple[str, ...]  # e.g. the paper's own inconsistencies
    n_seeds: int
    n_test: int
    leak: tuple[LeakGap, ...] = ()  # `--with-clean`: leaky minus clean test accuracy per cell

    def to_dict(self) -> dict:
        return {
            "schema_version": 1,
            "n_seeds": self.n_seeds,
            "n_test": self.n_test,
            "cells": [c.to_dict() for c in self.cells],
            "claims": [c.to_dict() for c in self.claims],
            "notes": list(self.notes),
            "leak": [g.to_dict() for g in self.leak],
        }


@dataclass(frozen=True)
class LeakGap:
    """One configuration under the paper's protocol and under the clean one, same seeds."""

    config: Config  # the first seed's
    leaky: v.Interval  # best test accuracy, epoch chosen on test
    clean_validation: v.Interval  # best validation accuracy, epoch chosen on validation
    clean_test: v.Interval  # test accuracy read once, at that epoch
    gap: v.Difference  # leaky minus clean test, paired over seeds, in points

    def to_dict(self) -> dict:
        def interval(i: v.Interval) -> dict:
            return {"mean": _pct(i.mean), "ci95": [_pct(i.low), _pct(i.high)], "n": i.n}

        return {
            "config": {k: val for k, val in self.config.to_dict().items() if k != "seed"},
            "leaky": interval(self.leaky),
            "clean_validation": interval(self.clean_validation),
            "clean_test": interval(self.clean_test),
            "gap": {"estimate": _num(self.gap.estimate), "ci95": [_num(x) for x in self.gap.ci95],
                    "n": self.gap.n, "test": "paired t-interval (95%) over shared seeds"},
        }  # fmt: skip


class ReplicateProtocol(Protocol):
    name = "replicate"

    def __init__(self, study: Study, trainer=None) -> None:
        super().__init__(study, trainer)
        self.clean = None  # `--with-clean`: a Trainer whose split selects on validation
        staged = dataclasses.replace(study, protocol=ProtocolKind.STAGED,
                                     n_seeds=study.staged_seeds)  # fmt: skip
        self.staged = StagedProtocol(staged, trainer) if study.staged_seeds else None

    def configs(self) -> list[list[Config]]:
        """One list (one config per seed) per distinct published configuration."""
        seen, groups = set(), []
        for cell in paper_cells(self.study):
            key = factors_key(cell.factors)
            if key not in seen:
                seen.add(key)
                groups.append([self.study.config(seed=s, **cell.factors)
                               for s in self.study.seeds])  # fmt: skip
        return groups

    def run(self) -> list[StageTable]:
        trainer = self.trainer
        configs = [c for group in self.configs() for c in group]
        finished = trainer.store.finished()
        n_reused = sum(trainer.key(c) in finished for c in configs)
        trainer.on_event(StageStarted(1, None, "replication", len(configs), n_reused))
        trainer.stage = "replication"
        by_key = trainer.ensure(configs)
        staged_tables = []
        if self.staged is not None:
            self.staged.keep = {trainer.key(c) for c in configs}  # the final model needs them
            staged_tables = self.staged.run()
        if self.clean is not None:
            self._train_clean(configs)
        tables = self._replication_tables(by_key, self.trainer.data.split)
        for table in tables:
            trainer.on_event(StageFinished(table))
        return [*staged_tables, *tables]

    def _train_clean(self, configs: list[Config]) -> None:
        """The same cells with stopping and selection on validation; test read once each."""
        clean = self.clean
        finished = clean.store.finished()
        n_reused = sum(clean.key(c) in finished for c in configs)
        clean.on_event(StageStarted(2, None, "clean", len(configs), n_reused))
        clean.stage = "clean"
        by_key = clean.ensure(configs)
        evaluate_test_once(clean, configs, by_key)

    def tables(
        self, records: Sequence[TrialRecord], tests: dict[str, float], split: dict | None = None
    ) -> list[StageTable]:
        split = self.trainer.data.split if split is None else split
        by_key = {r.key: r for r in records if r.status.is_finished}
        staged = self.staged.tables(records, tests, split) if self.staged else []
        needed = [trial_key(c, split) for g in self.configs() for c in g]
        if any(k not in by_key for k in needed):
            return staged
        return [*staged, *self._replication_tables(by_key, split)]

    def _replication_tables(self, by_key: dict, split: dict) -> list[StageTable]:
        """Tables I-IV on the paper's configurations, numbered after the staged tables."""
        first = len(self.study.stages) + 1 if self.staged else 1
        cells = paper_cells(self.study)
        tables = []
        for i, stage in enumerate(self.study.stages):
            rows = []
            for cell in (c for c in cells if c.stage == stage.name):
                group = [self.study.config(seed=s, **cell.factors) for s in self.study.seeds]
                records = [by_key[trial_key(c, split)] for c in group]
                rows.append(make_row(cell.row, records, tests={}, leaky=True,
                                     published=cell.published))  # fmt: skip
            winner = pick_winner(rows)
            if winner is not None:
                rows[winner] = dataclasses.replace(rows[winner], is_winner=True)
            tables.append(StageTable(
                study=self.study.name, protocol=self.name, index=first + i,
                name=f"replication_{ROMAN[i]}",
                title=f"Replication of Table {ROMAN[i]}: {_title(stage)}",
                factor=stage.factor, selection=self.study.selection.value,
                rule=self.rule(), rows=tuple(rows)))  # fmt: skip
        return tables

    def rule(self) -> str:
        return (f"the paper's configurations along its own path; early stopping and selection "
                f"on the test set (the paper's metric); mean over {self.study.n_seeds} "
                "seeds")  # fmt: skip

    def replication(
        self,
        records: Sequence[TrialRecord],
        split: dict | None = None,
        *,
        tests: dict[str, float] | None = None,
        clean_split: dict | None = None,
    ) -> Replication:
        """The verdict, from stored records alone; with `clean_split` (and the stored `tests`)
        also the leak per cell."""
        split = self.trainer.data.split if split is None else split
        if clean_split is None and self.clean is not None:
            clean_split = self.clean.data.split
        n_test = split.get("n_test", 10_000)
        by_key = {r.key: r for r in records if r.status.is_finished}
        results = []
        for cell in paper_cells(self.study):
            group = [self.study.config(seed=s, **cell.factors) for s in self.study.seeds]
            found = [by_key[k] for c in group if (k := trial_key(c, split)) in by_key]
            results.append(_cell_result(cell, group[0], found, n_test))
        claims = _claims(self.study, results, n_test)
        gaps = ()
        if clean_split:
            gaps = tuple(_leak_gaps(self.configs(), by_key, tests or {}, split, clean_split))
        return Replication(tuple(results), tuple(claims), tuple(_paper_notes(results)),
                           self.study.n_seeds, n_test, gaps)  # fmt: skip


def _cell_result(cell: PublishedCell, config: Config, records: list[TrialRecord],
                 n_test: int) -> CellResult:  # fmt: skip
    records = sorted(records, key=lambda r: r.seed)
    accuracies = tuple(r.best_accuracy for r in records)
    interval = v.cell_interval(accuracies, n_test)
    return CellResult(
        cell, config, tuple(r.seed for r in records), accuracies,
        tuple(r.outcome.value if r.outcome else "" for r in records),
        tuple(r.epochs for r in records), interval, v.place(cell.published, interval),
        tuple(cell_flags(records)),
    )  # fmt: skip


def cell_flags(records: Sequence[TrialRecord]) -> list[str]:
    """What a mean over these seeds would hide: divergence, chance level, the epoch cap."""
    n, flags = len(records), []
    diverged = sum(r.outcome is not None and r.outcome.value == "diverged" for r in records)
    chance = sum(
        not r.best_accuracy >= 1 / N_CLASSES + CHANCE_MARGIN for r in records
    )  # nan counts as chance
    capped = sum(r.epochs >= r.config.max_epochs and r.best_epoch == r.epochs for r in records)
    if diverged:
        flags.append(f"{diverged} of {n} seeds diverged (a seed counts with its best epoch "
                     "before that, or not at all if it had none)")  # fmt: skip
    if chance:
        flags.append(f"{chance} of {n} seeds stayed at chance")
    if capped:
        flags.append(f"{capped} of {n} seeds hit the {records[0].config.max_epochs}-epoch cap "
                     "still improving")  # fmt: skip
    return flags


def _claims(study: Study, results: list[CellResult], n_test: int) -> list[v.Claim]:
    claims = []
    for i, stage in enumerate(study.stages):
        cells = [r for r in results if r.cell.stage == stage.name]
        if not stage.published or len(cells) < 2:
            continue
        top = max(cells, key=lambda r: r.cell.published)
        others = [(r.cell.row, r.accuracies) for r in cells if r is not top]
        noun = FACTORS[stage.factor].noun
        text = (f"{top.cell.row} is the best {noun} (Table {ROMAN[i]}: it beats "
                f"{', '.join(o for o, _ in others)})")  # fmt: skip
        claims.append(v.judge_best(ROMAN[i], text, (top.cell.row, top.accuracies), others))
    if study.published_final is not None and results:
        final = _final_cell(study, results)
        labels = config_text(study.config(seed=0, **final.cell.factors))
        text = f"The final configuration ({labels}) reaches {study.published_final:g}%"
        claims.append(v.judge_value("final", text, final.accuracies, study.published_final,
                                    n_test))  # fmt: skip
    return claims


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


def _leak_gaps(groups, by_key: dict, tests: dict, split: dict, clean_split: dict):
    """Per configuration: leaky accuracy vs the clean run's test accuracy, seed by seed."""
    for group in groups:
        leaky, val, test = [], [], []
        for config in group:
            record = by_key.get(trial_key(config, split))
            clean = by_key.get(trial_key(config, clean_split))
            leaky.append(record.best_accuracy if record else math.nan)
            val.append(clean.best_accuracy if clean and clean.is_usable else math.nan)
            test.append(tests.get(clean.key, math.nan) if clean else math.nan)
        if all(math.isnan(t) for t in test):
            continue
        yield LeakGap(group[0], v.seed_interval(leaky), v.seed_interval(val),
                      v.seed_interval(test), v.paired_difference(leaky, test))  # fmt: skip


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def _title(stage: Stage) -> str:
    title = stage.title or stage.name
    return title.split(": ", 1)[1] if title.startswith("Table ") and ": " in title else title


def _pct(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(100 * x, 4)
