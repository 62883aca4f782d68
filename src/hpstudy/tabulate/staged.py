"""The staged tables: one per stage, each stage around the earlier stages' winners.

>>> tables = staged_tables(study, records, tests, split)   # stops at an unfinished stage
>>> table = stage_table(study, index, stage, base, by_key, tests, split)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hpstudy.config.factors import factor_label
from hpstudy.config.study import Stage, Study
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord, trial_key
from hpstudy.tabulate.plans import stage_groups
from hpstudy.tabulate.rows import make_row, pick_winner, winner_rule


def stage_table(study: Study, index: int, stage: Stage, base: dict,
                by_key: dict[str, TrialRecord], tests: dict[str, float],
                split: dict) -> StageTable:  # fmt: skip
    """Stage `index` (1-based) around `base`; every configuration must be in `by_key`. Only the
    winner's test accuracy is shown: a clean run measures it for stage winners alone."""
    leaky = study.selection.is_leaky
    rows, row_records = [], []
    for i, (value, group) in enumerate(
        zip(stage.values, stage_groups(study, stage, base), strict=True)
    ):
        records = [by_key[trial_key(c, split)] for c in group]
        published = stage.published[i] if stage.published else None
        row_records.append(records)
        label = factor_label(stage.factor, value)
        rows.append(make_row(label, records, tests={}, leaky=leaky, published=published))
    winner = pick_winner(rows)
    if winner is not None:
        row = make_row(rows[winner].label, row_records[winner], tests=tests, leaky=leaky,
                       published=rows[winner].published)  # fmt: skip
        rows[winner] = dataclasses.replace(row, is_winner=True)
    return StageTable(
        study=study.name,
        protocol="staged",
        index=index,
        name=stage.name,
        title=stage.title or stage.name,
        factor=stage.factor,
        selection=study.selection.value,
        rule=winner_rule(study),
        rows=tuple(rows),
    )


def next_base(base: dict, stage: Stage, table: StageTable) -> dict:
    """The factors the next stage holds fixed: `base` with this stage's winning value."""
    return {**base, stage.factor: stage.values[table.rows.index(table.winner)]}


def staged_tables(study: Study, records: Sequence[TrialRecord], tests: dict[str, float],
                  split: dict) -> list[StageTable]:  # fmt: skip
    """Every stage's table from stored records (stops at the first stage with a configuration
    not yet finished, and after a stage where everything diverged)."""
    by_key = {r.key: r for r in records if r.status.is_finished}
    tables, base = [], dict(study.start)
    for index, stage in enumerate(study.stages, 1):
        groups = stage_groups(study, stage, base)
        if any(trial_key(c, split) not in by_key for g in groups for c in g):
            break
        table = stage_table(study, index, stage, base, by_key, tests, split)
        tables.append(table)
        if table.winner is None:
            break
        base = next_base(base, stage, table)
    return tables
