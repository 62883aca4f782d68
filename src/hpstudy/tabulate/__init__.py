"""Tabulation: a finished (or unfinished) run's tables and verdict, a pure function of the
study, the stored trial records and the split. No trainer, no engine, no torch: the runner and
the report call the same functions, so a report recomputes exactly the tables the run wrote.

    >>> tables = tabulate(study, store.records(), store.test_accuracies(), split)
    >>> replication = judge_run(study, records, split, tests=tests, clean_split=clean_split)
    >>> final_record(replication, records, split)     # the final model's stored trial

`plans` says which configurations each protocol trains (the protocols train them from there);
`grid`, `staged`, `search` and `replicate` tabulate each protocol; `replication` judges the
published numbers of a replicate study (`cells`: the paper's numbers; `findings`: the verdict as
data and replication.json); `rows` holds what every table is made of.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hpstudy.config.study import ProtocolKind, Study
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord
from hpstudy.tabulate.findings import Replication
from hpstudy.tabulate.grid import grid_tables
from hpstudy.tabulate.replicate import replicate_tables
from hpstudy.tabulate.replication import final_record, judge
from hpstudy.tabulate.search import search_tables
from hpstudy.tabulate.staged import staged_tables

Tabulator = Callable[[Study, Sequence[TrialRecord], dict[str, float], dict], list[StageTable]]

TABULATORS: dict[ProtocolKind, Tabulator] = {
    ProtocolKind.STAGED: staged_tables,
    ProtocolKind.GRID: grid_tables,
    ProtocolKind.SEARCH: search_tables,
    ProtocolKind.REPLICATE: replicate_tables,
}


def tabulate(study: Study, records: Sequence[TrialRecord], tests: dict[str, float],
             split: dict) -> list[StageTable]:  # fmt: skip
    """The study's tables from stored records: `tests` maps a trial key to the test accuracy
    measured once (clean stage winners); `split` is the run's split (run.json `split`)."""
    return TABULATORS[study.protocol](study, records, tests, split)


def judge_run(study: Study, records: Sequence[TrialRecord], split: dict, *,
              tests: dict[str, float] | None = None,
              clean_split: dict | None = None) -> Replication | None:  # fmt: skip
    """The verdict on the paper's published numbers for a replicate study; None for others."""
    if study.protocol is not ProtocolKind.REPLICATE:
        return None
    return judge(study, records, split, tests=tests, clean_split=clean_split)


__all__ = ["TABULATORS", "Replication", "final_record", "judge_run", "tabulate"]
