"""The grid's table: every configuration of the space, mean ± CI over seeds, best first.

>>> (table,) = grid_tables(study, records, tests, split)
"""

from __future__ import annotations

from collections.abc import Sequence

from hpstudy.config.factors import config_label, shown
from hpstudy.config.study import Study
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord, trial_key
from hpstudy.tabulate.plans import grid_groups
from hpstudy.tabulate.rows import make_row, ranked_table, winner_rule


def grid_tables(study: Study, records: Sequence[TrialRecord], tests: dict[str, float],
                split: dict) -> list[StageTable]:  # fmt: skip
    """One table: a row for every grid point with a finished seed on `split`."""
    by_key = {r.key: r for r in records if r.status.is_finished}
    rows = []
    for group in grid_groups(study):
        found = [by_key[k] for c in group if (k := trial_key(c, split)) in by_key]
        if found:
            label = config_label(group[0], shown(study.space))
            rows.append(make_row(label, found, tests=tests, leaky=study.selection.is_leaky))
    return [ranked_table(study, "grid", rows, name="grid",
                         title="Grid: {n} configurations, best first",
                         rule=winner_rule(study))]  # fmt: skip
