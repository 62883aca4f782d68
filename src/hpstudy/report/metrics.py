"""Numbers the report derives from trial records and predictions: no formatting, no files.

    >>> cm = confusion_matrix(final.labels, final.predictions)   # (10, 10), rows = true class
    >>> per_class(cm)[0]            # ClassScore(index=0, precision=..., recall=..., f1=..., ...)
    >>> confused_pairs(cm, k=5)     # the class pairs the model mixes up most, both directions
    >>> main_effects(view)          # factor -> [(label, Cell)]: mean ± 95% CI per level
    >>> interaction(view)           # topology label -> (optimizers x learning rates) mean accuracy
    >>> importances(view)           # fANOVA importance per factor, or a reason why there is none

Intervals are Student-t intervals (`hpstudy.stats.tables.mean_ci`, scipy) over seeds, or over
configurations for main effects: a level's configurations differ in the other factors, and each
configuration counts once (its mean over seeds), so n is the number of configurations.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from hpstudy.config.config import Config
from hpstudy.config.factors import FACTORS, Range, factor_label, factors_of, searched
from hpstudy.report.loader import FACTOR_KEYS, RunView
from hpstudy.stats.tables import Cell, mean_ci
from hpstudy.stats.verdict import Difference, paired_difference
from hpstudy.storage import TrialRecord
from hpstudy.storage.importance import Importances, param_importances
from hpstudy.tabulate.rows import usable_accuracy

# -- the final model ---------------------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int = 10):
    """(n_classes, n_classes) int64 counts: row = true class, column = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
    return cm


@dataclass(frozen=True)
class ClassScore:
    index: int
    precision: float  # of the images predicted as this class, the share that are (nan: none)
    recall: float  # of the images of this class, the share found
    f1: float
    support: int  # test images of this class


def per_class(cm: np.ndarray) -> list[ClassScore]:
    scores = []
    for i in range(len(cm)):
        hit, predicted, actual = cm[i, i], cm[:, i].sum(), cm[i, :].sum()
        precision = hit / predicted if predicted else math.nan
        recall = hit / actual if actual else math.nan
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append(ClassScore(i, float(precision), float(recall), float(f1), int(actual)))
    return scores


@dataclass(frozen=True)
class ConfusedPair:
    a: int
    b: int
    a_as_b: int  # images of class a predicted as b
    b_as_a: int

    @property
    def total(self) -> int:
        return self.a_as_b + self.b_as_a


def confused_pairs(cm: np.ndarray, k: int = 5) -> list[ConfusedPair]:
    """The k unordered class pairs with the most confusions (both directions summed)."""
    pairs = [
        ConfusedPair(a, b, int(cm[a, b]), int(cm[b, a]))
        for a in range(len(cm))
        for b in range(a + 1, len(cm))
    ]
    pairs = [p for p in pairs if p.total]
    pairs.sort(key=lambda p: (-p.total, p.a, p.b))
    return pairs[:k]


# -- grid and search studies -------------------------------------------------------------------


def config_means(records: Iterable[TrialRecord], names=FACTOR_KEYS) -> dict[tuple, Cell]:
    """Configuration (factors `names`, no seed) -> mean ± CI of its usable seeds' best
    accuracy."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        if r.is_usable:
            groups[factors_of(r.config, names)].append(r.best_accuracy)
    return {k: mean_ci(v) for k, v in groups.items()}


MAX_LEVELS = 6  # a range's tried values: one level each up to this many, else bins
N_BINS = 4  # ... else this many bins of (nearly) equal count


def main_effects(view: RunView) -> dict[str, list[tuple[str, Cell]]]:
    """Factor -> [(level label, mean ± CI over the configurations at that level)], in space order.

    Each configuration enters once, as its mean over seeds, and only where the factor applies
    to it (momentum: SGD's configurations). A range's levels are the values the search tried:
    one level per value if there are at most `MAX_LEVELS`, else `N_BINS` bins of equal count
    ('0.0001–0.00234'), in value order.
    """
    space = view.study.space
    names = searched(space)
    means = config_means(view.finished, names)
    configs = {factors_of(r.config, names): r.config for r in view.finished}
    effects = {}
    for i, factor in enumerate(names):
        applies = FACTORS[factor].applies
        points = sorted((k[i], c.mean) for k, c in means.items() if applies(configs[k].optimizer))
        domain = space[factor]
        if isinstance(domain, Range):
            effects[factor] = _range_levels(factor, points)
        else:
            effects[factor] = [(factor_label(factor, value),
                                mean_ci([m for x, m in points if x == _hashable(value)]))
                               for value in domain]  # fmt: skip
    return effects


def _range_levels(factor: str, points: list[tuple]) -> list[tuple[str, Cell]]:
    """(value, configuration mean) pairs in value order -> levels (see `main_effects`)."""
    values = sorted({x for x, _ in points})
    if len(values) <= MAX_LEVELS:
        return [(factor_label(factor, v), mean_ci([m for x, m in points if x == v]))
                for v in values]  # fmt: skip
    levels = []
    for chunk in np.array_split(np.arange(len(points)), N_BINS):
        low, high = points[chunk[0]][0], points[chunk[-1]][0]
        label = f"{_short(low)}–{_short(high)}"
        levels.append((label, mean_ci([points[j][1] for j in chunk])))
    return levels


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _hashable(value):
    return tuple(value) if isinstance(value, list | tuple) else value


@dataclass(frozen=True)
class Interaction:
    """Mean accuracy per (optimizer, learning rate), one matrix per topology."""

    optimizers: tuple[str, ...]  # row labels
    lrs: tuple[str, ...]  # column labels
    cells: dict[str, np.ndarray]  # topology label -> (n_optimizers, n_lrs), nan where untried


def interaction(view: RunView) -> Interaction | None:
    """Optimizer x learning rate per topology: the mean over activations (and seeds); None
    where the space does not list all three (a range of lr, depth and width)."""
    space = view.study.space
    if not all(isinstance(space.get(f), tuple) for f in ("topology", "optimizer", "lr")):
        return None
    means = config_means(view.finished)
    cells = {}
    for topology in space["topology"]:
        grid = np.full((len(space["optimizer"]), len(space["lr"])), np.nan)
        for i, opt in enumerate(space["optimizer"]):
            for j, lr in enumerate(space["lr"]):
                found = [c.mean for k, c in means.items() if k[:3] == (tuple(topology), opt, lr)]
                if found:
                    grid[i, j] = float(np.mean(found))
        cells[factor_label("topology", topology)] = grid
    return Interaction(
        optimizers=tuple(factor_label("optimizer", o) for o in space["optimizer"]),
        lrs=tuple(factor_label("lr", lr) for lr in space["lr"]),
        cells=cells,
    )


def importances(view: RunView, seed: int = 0) -> Importances:
    """Parameter importances of the run's complete trials: Optuna's fANOVA (see
    `hpstudy.storage.importance`)."""
    return param_importances(view.store, searched(view.study.space), seed)


@dataclass(frozen=True)
class Rank:
    rank: int  # 1 = best; rows with the same mean share a rank
    n: int  # configurations in the table
    row: object  # hpstudy.stats.tables.Row of the configuration
    best: object  # the table's first row
    # row - best in points, paired over the seeds both trained (95% paired t-interval)
    gap: Difference | None = None


def rank_in(table, config: Config, records: Iterable[TrialRecord] = ()) -> Rank | None:
    """Where a configuration ranks in a grid's table, by its factors alone, and (given the
    grid's `records`) its gap to the table's best, paired over their seeds.

    Seeds, epochs and batch size are ignored: they are the runs' budgets, which the report
    states beside the rank.
    """
    rows = [r for r in table.rows if r.selection.n]
    target = factors_of(config)
    for row in rows:
        if factors_of(row.config) == target:
            rank = 1 + sum(r.selection.mean > row.selection.mean for r in rows)
            gap = seed_paired_gap(row, rows[0], records) if records else None
            return Rank(rank, len(rows), row, rows[0], gap)
    return None


def seed_paired_gap(row, best, records: Iterable[TrialRecord]) -> Difference:
    """`row` minus `best` (two rows of one table) in points, seed by seed over the seeds both
    trained usably (a diverged seed counts on neither side): the runs of one seed share their
    data order, so the seed-to-seed noise cancels in the pairs."""
    by_number = {r.number: r for r in records}

    def by_seed(r) -> dict[int, float]:
        found = (by_number.get(n) for n in r.trial_numbers)
        return {t.seed: usable_accuracy(t) for t in found if t is not None}

    mine, theirs = by_seed(row), by_seed(best)
    shared = sorted(set(mine) & set(theirs))
    return paired_difference([mine[s] for s in shared], [theirs[s] for s in shared])


@dataclass(frozen=True)
class GapRow:
    config: object  # hpstudy.config.config.Config of the first seed
    leaky: Cell  # test accuracy where the test set chose the epoch (paper protocol)
    clean_selection: Cell  # validation accuracy (clean protocol)
    clean_test: Cell  # test accuracy measured once at the validation-chosen epoch (n may be 0)


def leakage_gap(leaky: RunView, clean: RunView) -> list[GapRow]:
    """The configurations (factors) both runs trained, in the leaky run's order."""

    def group(view: RunView) -> dict[tuple, list[TrialRecord]]:
        groups: dict[tuple, list[TrialRecord]] = defaultdict(list)
        for r in sorted(view.finished, key=lambda r: r.number):
            groups[factors_of(r.config)].append(r)
        return groups

    ours, theirs = group(leaky), group(clean)
    rows = []
    for key, records in ours.items():
        if key not in theirs:
            continue
        other = sorted(theirs[key], key=lambda r: r.seed)
        rows.append(
            GapRow(
                config=records[0].config,
                leaky=mean_ci([usable(r) for r in sorted(records, key=lambda r: r.seed)]),
                clean_selection=mean_ci([usable(r) for r in other]),
                clean_test=mean_ci([clean.tests[r.key] for r in other if r.key in clean.tests]),
            )
        )
    return rows


def usable(record: TrialRecord) -> float:
    return record.best_accuracy if record.is_usable else math.nan


@dataclass(frozen=True)
class StageCost:
    stage: str
    n_trials: int  # trials first needed by this stage (reused ones count where first trained)
    epochs: int
    wall_s: float  # their training wall time (each trial's share of its population)


def stage_costs(view: RunView) -> list[StageCost]:
    """Training wall time per stage (staged runs) or for the whole run (grid, search)."""
    by_number = view.by_number
    seen: set[int] = set()
    costs = []
    if view.is_staged:
        for table in view.tables:
            numbers = [n for row in table.rows for n in row.trial_numbers if n not in seen]
            seen |= set(numbers)
            costs.append(_cost(f"{table.index}. {table.name}", [by_number[n] for n in numbers]))
    rest = [r for r in view.finished if r.number not in seen]
    if rest:
        costs.append(_cost("all trials" if not costs else "other trials", rest))
    return costs


def _cost(label: str, records: Sequence[TrialRecord]) -> StageCost:
    return StageCost(
        label, len(records), sum(r.epochs for r in records), sum(r.wall_s for r in records)
    )
