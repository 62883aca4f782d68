"""Rows and ranked tables: what every protocol's tables are made of.

>>> row = make_row("T4", records, tests={}, leaky=True)      # mean ± CI over the seeds
>>> pick_winner(rows)                                         # highest mean selection accuracy
>>> ranked_table(study, "grid", rows, name="grid", title="Grid: {n} ...", rule=rule)
>>> winner_rule(study)    # 'early stopping and selection on ...; winner by mean over 5 seeds'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hpstudy.config.study import Study
from hpstudy.stats.tables import Cell, Row, StageTable, mean_ci
from hpstudy.storage import TrialRecord


def selection_rule(study: Study) -> str:
    """Which split stopped training and chose the epoch, in one phrase."""
    split = (
        "test set (the paper's leak)"
        if study.selection.is_leaky
        else (f"validation split ({study.validation_size:,} images held out of training)")
    )
    return f"early stopping and selection on the {split}"


def winner_rule(study: Study) -> str:
    """The selection, then how the winner is chosen: the rule printed under a table."""
    seeds = f"mean over {study.n_seeds} seeds" if study.n_seeds > 1 else "one seed"
    return f"{selection_rule(study)}; winner by {seeds}"


def ranked_table(study: Study, protocol: str, rows: list[Row], *, name: str, title: str,
                 rule: str) -> StageTable:  # fmt: skip
    """A one-round table (grid, search): rows best first, the winner marked. `title` may use
    `{n}`, the number of rows."""
    rows = mark_winner(sorted(rows, key=lambda r: -r.selection.mean if r.selection.n else 1.0))
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
    return Row(
        label=label,
        config=records[0].config,
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


def mark_winner(rows: list[Row]) -> list[Row]:
    """`rows` with the winner (`pick_winner`) marked, in their order."""
    winner = pick_winner(rows)
    if winner is not None:
        rows[winner] = dataclasses.replace(rows[winner], is_winner=True)
    return rows
