"""The staged protocol: vary one factor per stage and carry each stage's winner forward.

    >>> tables = StagedProtocol(load_study("paper"), trainer).run()     # four StageTables

With `selection = "test"` (the paper) early stopping and selection read the test set, as the paper
did; the tables say so. With `selection = "validation"` (clean) they read a validation split, and
the test set is evaluated once per stage winner (each seed), the result kept in the store.
A configuration and seed that an earlier stage trained is reused, never trained again.
"""

from __future__ import annotations

from collections.abc import Sequence

from hpstudy.config.config import Config
from hpstudy.config.factors import factor_label
from hpstudy.config.study import Stage
from hpstudy.protocols.base import Protocol, evaluate_test_once, make_row, pick_winner
from hpstudy.protocols.events import StageFinished, StageStarted
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord, trial_key


class StagedProtocol(Protocol):
    name = "staged"
    keep: frozenset[str] | set[str] = frozenset()  # trial keys whose cached weights stay

    def stage_configs(self, stage: Stage, base: dict) -> list[list[Config]]:
        """One list of configs (one per seed) for each value the stage tries."""
        return [
            [self.study.config(seed=s, **{**base, stage.factor: v}) for s in self.study.seeds]
            for v in stage.values
        ]

    def run(self) -> list[StageTable]:
        trainer = self.trainer
        tables: list[StageTable] = []
        base = dict(self.study.start)
        for index, stage in enumerate(self.study.stages, 1):
            groups = self.stage_configs(stage, base)
            configs = [c for group in groups for c in group]
            finished = trainer.store.finished()
            n_reused = sum(trainer.key(c) in finished for c in configs)
            trainer.on_event(StageStarted(index, len(self.study.stages), stage.name,
                                          len(configs), n_reused))  # fmt: skip
            trainer.stage = stage.name
            by_key = trainer.ensure(configs)
            table = self.stage_table(index, stage, base, by_key, trainer.store.test_accuracies())
            winner = table.winner
            if winner is not None and not self.study.selection.is_leaky:
                self._evaluate_test(groups[table.rows.index(winner)], by_key)
                table = self.stage_table(
                    index, stage, base, by_key, trainer.store.test_accuracies()
                )
            winner = table.winner
            tables.append(table)
            trainer.on_event(StageFinished(table))
            self._drop_weights(groups, table)
            if winner is None:
                break  # every configuration diverged: nothing to carry forward
            base = {**base, stage.factor: stage.values[table.rows.index(winner)]}
        return tables

    def stage_table(
        self,
        index: int,
        stage: Stage,
        base: dict,
        by_key: dict[str, TrialRecord],
        tests: dict[str, float],
        split: dict | None = None,
    ) -> StageTable:
        split = self.trainer.data.split if split is None else split
        leaky = self.study.selection.is_leaky
        rows, row_records = [], []
        for i, (value, group) in enumerate(
            zip(stage.values, self.stage_configs(stage, base), strict=True)
        ):
            records = [by_key[trial_key(c, split)] for c in group]
            published = stage.published[i] if stage.published else None
            row_records.append(records)
            # Only the stage winner's test accuracy is shown: it is measured for winners alone.
            label = factor_label(stage.factor, value)
            rows.append(make_row(label, records, tests={}, leaky=leaky, published=published))
        winner = pick_winner(rows)
        if winner is not None:
            row = make_row(rows[winner].label, row_records[winner], tests=tests, leaky=leaky,
                           published=rows[winner].published)  # fmt: skip
            rows[winner] = _replace(row, is_winner=True)
        return StageTable(
            study=self.study.name,
            protocol=self.name,
            index=index,
            name=stage.name,
            title=stage.title or stage.name,
            factor=stage.factor,
            selection=self.study.selection.value,
            rule=self.rule(),
            rows=tuple(rows),
        )

    def tables(
        self, records: Sequence[TrialRecord], tests: dict[str, float], split: dict | None = None
    ) -> list[StageTable]:
        """Recompute every stage's table from stored records (stops at the first stage with
        a configuration not yet finished)."""
        split = self.trainer.data.split if split is None else split
        by_key = {r.key: r for r in records if r.status.is_finished}
        tables, base = [], dict(self.study.start)
        for index, stage in enumerate(self.study.stages, 1):
            groups = self.stage_configs(stage, base)
            if any(trial_key(c, split) not in by_key for g in groups for c in g):
                break
            table = self.stage_table(index, stage, base, by_key, tests, split)
            tables.append(table)
            if table.winner is None:
                break
            base = {**base, stage.factor: stage.values[table.rows.index(table.winner)]}
        return tables

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


def _replace(row, **changes):
    import dataclasses

    return dataclasses.replace(row, **changes)
