"""The staged protocol: vary one factor per stage and carry each stage's winner forward.

    >>> tables = StagedProtocol(load_study("paper"), trainer).run()     # four StageTables

With `selection = "test"` (the paper) early stopping and selection read the test set, as the paper
did; the tables say so. With `selection = "validation"` (clean) they read a validation split, and
the test set is evaluated once per stage winner (each seed), the result kept in the store.
A configuration and seed that an earlier stage trained is reused, never trained again.
"""

from __future__ import annotations

from hpstudy.config.config import Config
from hpstudy.config.study import Stage
from hpstudy.protocols.base import Protocol, evaluate_test_once
from hpstudy.protocols.events import StageFinished, StageStarted
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord
from hpstudy.tabulate.plans import stage_groups
from hpstudy.tabulate.staged import next_base, stage_table


class StagedProtocol(Protocol):
    name = "staged"
    keep: frozenset[str] | set[str] = frozenset()  # trial keys whose cached weights stay

    def run(self) -> list[StageTable]:
        trainer = self.trainer
        tables: list[StageTable] = []
        base = dict(self.study.start)
        for index, stage in enumerate(self.study.stages, 1):
            groups = stage_groups(self.study, stage, base)
            configs = [c for group in groups for c in group]
            finished = trainer.store.finished()
            n_reused = sum(trainer.key(c) in finished for c in configs)
            trainer.on_event(StageStarted(index, len(self.study.stages), stage.name,
                                          len(configs), n_reused))  # fmt: skip
            trainer.stage = stage.name
            by_key = trainer.ensure(configs)
            table = self._table(index, stage, base, by_key)
            winner = table.winner
            if winner is not None and not self.study.selection.is_leaky:
                self._evaluate_test(groups[table.rows.index(winner)], by_key)
                table = self._table(index, stage, base, by_key)
            winner = table.winner
            tables.append(table)
            trainer.on_event(StageFinished(table))
            self._drop_weights(groups, table)
            if winner is None:
                break  # every configuration diverged: nothing to carry forward
            base = next_base(base, stage, table)
        return tables

    def _table(self, index: int, stage: Stage, base: dict,
               by_key: dict[str, TrialRecord]) -> StageTable:  # fmt: skip
        tests = self.trainer.store.test_accuracies()
        return stage_table(self.study, index, stage, base, by_key, tests, self.trainer.data.split)

    def _evaluate_test(self, group: list[Config], by_key: dict[str, TrialRecord]) -> None:
        """The winner's test accuracy, once per seed (kept in the store, never recomputed)."""
        evaluate_test_once(self.trainer, group, by_key)

    def _drop_weights(self, groups: list[list[Config]], table: StageTable) -> None:
        """Delete cached weights of this stage's losers; keep the winner's (the final model and
        the clean protocol's test evaluation need them). A loser never reappears later: later
        stages fix this stage's factor at the winner's value."""
        folder = self.trainer.weights_dir
        if folder is None or table.winner is None:
            return
        winner = table.rows.index(table.winner)
        for i, group in enumerate(groups):
            if i != winner:
                for config in group:
                    key = self.trainer.key(config)
                    if key not in self.keep:
                        (folder / f"{key}.pt").unlink(missing_ok=True)
