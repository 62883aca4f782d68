"""What every protocol shares: the base class and the rows of its tables.

>>> protocol = make_protocol(study, trainer); tables = protocol.run()
>>> row = make_row("T4", records, tests={}, leaky=True)      # mean ± CI over the seeds
>>> pick_winner(rows)                                         # highest mean selection accuracy
>>> evaluate_test_once(trainer, configs, by_key)    # clean protocols: the test set, once a trial
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence

from hpstudy.config.config import Config
from hpstudy.config.study import Study
from hpstudy.protocols.trainer import Trainer
from hpstudy.stats.tables import Cell, Row, StageTable, mean_ci
from hpstudy.storage import TrialRecord


class Protocol(abc.ABC):
    """Decides what to train next from what the store holds, and tabulates the results."""

    name: str = ""

    def __init__(self, study: Study, trainer: Trainer | None = None) -> None:
        self.study = study
        self.trainer = trainer  # None when only tabulating a finished run

    @abc.abstractmethod
    def run(self) -> list[StageTable]:
        """Train whatever is missing; return the tables (emitting StageFinished for each)."""

    @abc.abstractmethod
    def tables(
        self, records: Sequence[TrialRecord], tests: dict[str, float], split: dict | None = None
    ) -> list[StageTable]:
        """The tables, recomputed from stored records alone.

        `tests`: key -> test accuracy of stage winners; `split`: the run's split (default: the
        trainer's).
        """

    @property
    def trainers(self) -> list[Trainer]:
        """Every trainer the protocol trains through (a replication's clean arms add theirs)."""
        return [self.trainer] if self.trainer is not None else []

    def replication(self, records: Sequence[TrialRecord], split: dict | None = None, *,
                    tests: dict[str, float] | None = None,
                    clean_split: dict | None = None):  # fmt: skip
        """The verdict on published numbers, for a protocol that replicates a paper; None here."""
        return None

    def final_record(self, replication, records: Sequence[TrialRecord],
                     split: dict) -> TrialRecord | None:  # fmt: skip
        """The stored trial to save as the final model when the verdict chooses it; None here."""
        return None

    def rule(self) -> str:
        seeds = f"mean over {self.study.n_seeds} seeds" if self.study.n_seeds > 1 else "one seed"
        return f"{self.selection_rule()}; winner by {seeds}"

    def selection_rule(self) -> str:
        """Which split stopped training and chose the epoch, in one phrase."""
        split = (
            "test set (the paper's leak)"
            if self.study.selection.is_leaky
            else (f"validation split ({self.study.validation_size:,} images held out of training)")
        )
        return f"early stopping and selection on the {split}"


def ranked_table(study: Study, protocol: str, rows: list[Row], *, name: str, title: str,
                 rule: str) -> StageTable:  # fmt: skip
    """A one-round table (grid, search): rows best first, the winner marked. `title` may use
    `{n}`, the number of rows."""
    rows = sorted(rows, key=lambda r: -r.selection.mean if r.selection.n else 1.0)
    winner = pick_winner(rows)
    if winner is not None:
        rows[winner] = dataclasses.replace(rows[winner], is_winner=True)
    return StageTable(
        study=study.name,
        protocol=protocol,
        index=1,
        name=name,
        title=title.format(n=len(rows)),
        factor="",
        selection=study.selection.value,
        rule=rule,
        rows=tuple(rows),
    )


def usable_accuracy(record: TrialRecord) -> float:
    """The record's best accuracy, or nan where it is not a fair number (diverged, failed)."""
    return record.best_accuracy if record.is_usable else float("nan")


def make_row(
    label: str,
    records: Sequence[TrialRecord],
    *,
    tests: dict[str, float],
    leaky: bool,
    published: float | None = None,
) -> Row:
    """One table row from the records of one configuration's seeds (in seed order)."""
    records = sorted(records, key=lambda r: r.seed)
    selection = mean_ci([usable_accuracy(r) for r in records])
    if leaky:
        test: Cell | None = selection
    else:
        found = [tests[r.key] for r in records if r.key in tests]
        test = mean_ci(found) if found else None
    config = records[0].config.to_dict()
    return Row(
        label=label,
        config=config,
        seeds=tuple(r.seed for r in records),
        selection=selection,
        test=test,
        best_epochs=tuple(r.best_epoch for r in records),
        epochs=tuple(r.epochs for r in records),
        outcomes=tuple(r.outcome.value if r.outcome else "" for r in records),
        trial_numbers=tuple(r.number for r in records),
        published=published,
    )


def pick_winner(rows: Sequence[Row]) -> int | None:
    """Index of the row with the highest mean selection accuracy (first on ties)."""
    best, best_i = -1.0, None
    for i, row in enumerate(rows):
        if row.selection.n and row.selection.mean > best:
            best, best_i = row.selection.mean, i
    return best_i


def evaluate_test_once(
    trainer: Trainer, configs: Sequence[Config], by_key: dict[str, TrialRecord]
) -> None:
    """Each trial's test accuracy at its chosen epoch, measured once and kept in the store
    (`Store.set_test_accuracy`), never recomputed."""
    from hpstudy import engine

    tests = trainer.store.test_accuracies()
    for config in configs:
        record = by_key[trainer.key(config)]
        if record.key in tests or not record.is_usable:
            continue
        state_dict, _ = trainer.weights_of(record)
        evaluation = engine.evaluate(config, state_dict, trainer.data.test,
                                     device=trainer.data.device)  # fmt: skip
        trainer.store.set_test_accuracy(record.key, evaluation.accuracy)
