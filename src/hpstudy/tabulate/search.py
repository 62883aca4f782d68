"""The search's tables: the search ranking, then the confirmed table of its top rows.

>>> tables = search_tables(study, records, tests, split)   # [search] or [search, confirmed]
>>> top_rows(study, tables[0])                              # what the confirmation retrains
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hpstudy.config.config import Config
from hpstudy.config.factors import config_label, shown, space_size
from hpstudy.config.study import Study
from hpstudy.stats.tables import Row, StageTable, mean_ci, overstatement
from hpstudy.storage import TrialRecord
from hpstudy.tabulate.plans import seedless
from hpstudy.tabulate.rows import make_row, ranked_table, selection_rule, winner_rule

MAX_REPEATS = 200  # proposals in a row that all repeat known configurations: the search stops


def top_rows(study: Study, search: StageTable) -> list[Row]:
    """The rows the confirmation round retrains: the best `confirm_top` with a score."""
    return [row for row in search.rows if row.selection.n][: study.confirm_top]


def search_tables(study: Study, records: Sequence[TrialRecord], tests: dict[str, float],
                  split: dict, *, max_repeats: int = MAX_REPEATS) -> list[StageTable]:  # fmt: skip
    """The search table (search seeds), then, where confirmation trials exist, the confirmed
    table (confirmation seeds of the search table's top rows), whose winner is final."""
    leaky = study.selection.is_leaky
    groups: dict[Config, list[TrialRecord]] = {}
    confirmed: dict[Config, list[TrialRecord]] = {}
    confirmation_seeds = set(study.confirmation_seeds)
    for r in records:
        if not (r.status.is_finished and r.split == split):
            continue
        if r.seed in study.seeds:
            groups.setdefault(seedless(study, r.config), []).append(r)
        elif r.seed in confirmation_seeds:
            confirmed.setdefault(seedless(study, r.config), []).append(r)
    names = shown(study.space)
    rows = [make_row(config_label(base, names), group, tests=tests, leaky=leaky)
            for base, group in groups.items()]  # fmt: skip
    table = ranked_table(study, "search", rows, name="search",
                         title="Search: {n} configurations, best first",
                         rule=search_rule(study, len(rows), max_repeats))  # fmt: skip
    bases = [base for row in top_rows(study, table)
             if (base := seedless(study, row.config)) in confirmed]  # fmt: skip
    if not bases:
        return [table]
    rows = [make_row(config_label(base, names), confirmed[base], tests=tests, leaky=leaky)
            for base in bases]  # fmt: skip
    over = mean_ci(overstatement(table.rows, rows))
    seeds = study.confirmation_seeds
    rule = (f"{selection_rule(study)}; the top {len(rows)} by search score retrained with "
            f"{len(seeds)} new seeds ({seeds[0]}-{seeds[-1]}: seed + 1000 + i), winner by "
            f"their mean; the search-time score overstated the confirmed score by "
            f"{100 * over.mean:+.2f} pp on average (winner's curse)")  # fmt: skip
    title = "Confirmed: the search's top {n} on new seeds, best first"
    confirmed_table = ranked_table(study, "search", rows, name="confirmed", title=title,
                                   rule=rule)  # fmt: skip
    return [table, dataclasses.replace(confirmed_table, index=2)]


def search_rule(study: Study, n_tried: int, max_repeats: int = MAX_REPEATS) -> str:
    """The search table's rule: the selection, the sampler and why the search ended."""
    size = space_size(study.space)
    if n_tried >= size:
        end = f"the space was exhausted (all {size} configurations)"
    elif n_tried >= study.n_trials:
        end = f"the budget of {study.n_trials} distinct configurations was spent"
    else:
        causes = (f"the sampler repeated known ones {max_repeats} times in a row, or "
                  "the run stopped")  # fmt: skip
        if study.time_budget_s is not None:
            causes = (f"the time budget of {study.time_budget_s:g} s (the confirmation's "
                      f"share kept back) was spent, {causes}")  # fmt: skip
        end = f"ended after {n_tried} of {study.n_trials} configurations: {causes}"
    return f"{winner_rule(study)}; TPE sampler, {study.pruner} pruner; {end}"
