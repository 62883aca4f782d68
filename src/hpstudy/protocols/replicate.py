"""The replication protocol: every number the paper published, re-measured over seeds.

    >>> protocol = ReplicateProtocol(load_study("replicate"), trainer)
    >>> tables = protocol.run()            # our staged path (one seed), then Tables I-IV
    >>> verdict = protocol.replication(trainer.store.records())
    >>> verdict.cells[0].verdict, verdict.claims[0].verdict      # 'consistent', 'contradicted'
    >>> verdict.headline, verdict.recommended.config, verdict.final_model.seed

The paper carried its own winners forward (T4, then Adam, then 0.005), so its Tables II-IV were
measured on configurations a staged search with another seed never trains. This protocol trains
exactly those configurations, along the paper's path, once per seed, under the paper's metric
(best test accuracy, early stopping on test, patience 3, at most 20 epochs, batch 64). A
configuration in two tables is one trial per seed. Beside it runs the paper's staged search with
one seed, as the paper did (`[replicate] staged_seeds`), on the same store: its trials share keys
with the replication's, so nothing is trained twice.

The verdict is `hpstudy.protocols.replication` (`judge`), from stored records alone.
`--with-clean` trains two more arms on the same seeds to measure the leak and split it in two:
the clean protocol (54,000 training images, stopping on a 6,000-image validation split, the
test set read once) and the paper's test-selected protocol on the clean run's 54,000 training
images (`held_out_split`): training on 60,000 instead of 54,000 images, plus choosing the epoch
on the test set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hpstudy.config.config import Config
from hpstudy.config.factors import factors_key
from hpstudy.config.study import ProtocolKind, Stage, Study
from hpstudy.protocols.base import Protocol, evaluate_test_once, make_row, pick_winner
from hpstudy.protocols.events import StageFinished, StageStarted
from hpstudy.protocols.replication import (
    HELD_OUT_ARM,
    ROMAN,
    Replication,
    config_id,
    held_out_split,
    judge,
    paper_cells,
)
from hpstudy.protocols.staged import StagedProtocol
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord, trial_key

__all__ = ["HELD_OUT_ARM", "ReplicateProtocol", "config_id", "held_out_split", "paper_cells"]


class ReplicateProtocol(Protocol):
    name = "replicate"

    def __init__(self, study: Study, trainer=None) -> None:
        super().__init__(study, trainer)
        self.clean = None  # `--with-clean`: a Trainer whose split selects on validation
        self.held_out = None  # `--with-clean`: test-selected on the clean split (`held_out_split`)
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
        if self.held_out is not None:
            self._train_held_out(configs)
        tables = self._replication_tables(by_key, self.trainer.data.split)
        for table in tables:
            trainer.on_event(StageFinished(table))
        return [*staged_tables, *tables]

    def _train_clean(self, configs: list[Config]) -> None:
        """The same cells with stopping and selection on validation; test read once each."""
        by_key = self._train_arm(self.clean, 2, "clean", configs)
        evaluate_test_once(self.clean, configs, by_key)

    def _train_held_out(self, configs: list[Config]) -> None:
        """The paper's protocol (the epoch chosen on test) on the clean run's training images."""
        self._train_arm(self.held_out, 3, "held-out", configs)

    @staticmethod
    def _train_arm(trainer, index: int, name: str, configs: list[Config]) -> dict:
        """One `--with-clean` arm: its stage announced with what the store already holds."""
        finished = trainer.store.finished()
        n_reused = sum(trainer.key(c) in finished for c in configs)
        trainer.on_event(StageStarted(index, None, name, len(configs), n_reused))
        trainer.stage = name
        return trainer.ensure(configs)

    @property
    def trainers(self) -> list:
        """Every trainer this protocol trains with (`n_trained` counts them all)."""
        return [t for t in (self.trainer, self.clean, self.held_out) if t is not None]

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
        also the leak per cell, split in two where the held-out arm was trained."""
        split = self.trainer.data.split if split is None else split
        if clean_split is None and self.clean is not None:
            clean_split = self.clean.data.split
        return judge(self.study, self.configs(), records, split, tests=tests,
                     clean_split=clean_split)  # fmt: skip

    def final_record(self, replication: Replication, records: Sequence[TrialRecord],
                     split: dict) -> TrialRecord | None:  # fmt: skip
        """The stored trial of the final model (the recommended configuration, first seed)."""
        final = replication.final_model
        if final is None:
            return None
        key = trial_key(final.cell.config.replace(seed=final.seed), split)
        return next((r for r in records if r.key == key and r.is_usable), None)


def _title(stage: Stage) -> str:
    title = stage.title or stage.name
    return title.split(": ", 1)[1] if title.startswith("Table ") and ": " in title else title
