"""A replication's tables: its staged search (if any), then Tables I-IV on the paper's own path.

>>> tables = replicate_tables(study, records, tests, split)
>>> replicate_rule(study)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hpstudy.config.study import ProtocolKind, Stage, Study
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord, trial_key
from hpstudy.tabulate.cells import ROMAN, paper_cells
from hpstudy.tabulate.plans import replicate_groups
from hpstudy.tabulate.rows import make_row, mark_winner
from hpstudy.tabulate.staged import staged_tables


def staged_study(study: Study) -> Study | None:
    """The replication's staged search as a staged study (`staged_seeds` seeds), or None."""
    if not study.staged_seeds:
        return None
    return dataclasses.replace(study, protocol=ProtocolKind.STAGED, n_seeds=study.staged_seeds)


def replicate_tables(study: Study, records: Sequence[TrialRecord], tests: dict[str, float],
                     split: dict) -> list[StageTable]:  # fmt: skip
    """The staged tables, then the replication's once every published configuration finished."""
    by_key = {r.key: r for r in records if r.status.is_finished}
    staged = staged_study(study)
    tables = staged_tables(staged, records, tests, split) if staged else []
    needed = [trial_key(c, split) for g in replicate_groups(study) for c in g]
    if any(k not in by_key for k in needed):
        return tables
    return [*tables, *replication_tables(study, by_key, split)]


def replication_tables(study: Study, by_key: dict[str, TrialRecord],
                       split: dict) -> list[StageTable]:  # fmt: skip
    """Tables I-IV on the paper's configurations, numbered after the staged tables."""
    first = len(study.stages) + 1 if study.staged_seeds else 1
    cells = paper_cells(study)
    tables = []
    for i, stage in enumerate(study.stages):
        rows = []
        for cell in (c for c in cells if c.stage == stage.name):
            group = [study.config(seed=s, **cell.factors) for s in study.seeds]
            records = [by_key[trial_key(c, split)] for c in group]
            rows.append(make_row(cell.row, records, tests={}, leaky=True,
                                 published=cell.published))  # fmt: skip
        tables.append(StageTable(
            study=study.name, protocol="replicate", index=first + i,
            name=f"replication_{ROMAN[i]}",
            title=f"Replication of Table {ROMAN[i]}: {_title(stage)}",
            factor=stage.factor, selection=study.selection.value,
            rule=replicate_rule(study), rows=tuple(mark_winner(rows))))  # fmt: skip
    return tables


def replicate_rule(study: Study) -> str:
    return (
        f"the paper's configurations along its own path; early stopping and selection "
        f"on the test set (the paper's metric); mean over {study.n_seeds} seeds"
    )


def _title(stage: Stage) -> str:
    title = stage.title or stage.name
    return title.split(": ", 1)[1] if title.startswith("Table ") and ": " in title else title
