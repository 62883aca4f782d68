"""The report's tables as data: headers, formatted cells, the notes printed underneath.

    >>> table = stage_table(view, view.tables[0], published_numbers(view)["topology"])
    >>> table.columns          # ('', 'Topology', 'Layers', 'test acc (%)', 'paper (%)', ...)
    >>> table.rows[3]          # ('★', 'T4', '[784, 256, 128, 64, 10]', '88.12', '89.0', ...)
    >>> table.notes            # the selection rule and the split it used
    >>> table.data[3]          # the raw numbers behind the row (fractions), for report.json

A Table is what both renderers (HTML and Markdown) print; nothing here computes a statistic
(`hpstudy.report.metrics` and `hpstudy.tabulate` do) or touches a file. Accuracies are shown in %
with two decimals; a difference is ours minus the paper's, in percentage points (pp). These are
one run's tables; those that set it beside a sibling run are `hpstudy.report.sibling_tables`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hpstudy.config.factors import factor_label, factor_title, factors_of
from hpstudy.config.study import ProtocolKind
from hpstudy.report.loader import FACTOR_KEYS, Published, RunView
from hpstudy.report.metrics import Importances, StageCost
from hpstudy.stats.intervals import ABOVE, INSIDE, cell_interval, place, wilson_interval
from hpstudy.stats.tables import Cell, Row, StageTable, overstatement

WINNER = "★"


@dataclass(frozen=True)
class Table:
    key: str  # HTML anchor, unique within a report
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()  # sentences printed under the table
    marked: tuple[int, ...] = ()  # row indices to highlight (winners)
    data: tuple[dict, ...] = ()  # one dict of raw numbers per row (report.json)


def pct(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def cell_text(cell: Cell | None, n_images: int | None = None) -> str:
    """'88.13 ± 0.63 (n=3)'; one seed: '88.13 [87.49, 88.75] Wilson' when `n_images` (the
    evaluation images behind it) is given, else '88.13'; '–' for none."""
    if cell is None or cell.n == 0:
        return "–"
    if cell.n == 1 and n_images:
        w = wilson_interval(cell.mean, n_images)
        return f"{100 * cell.mean:.2f} [{100 * w.low:.2f}, {100 * w.high:.2f}] Wilson"
    return str(cell)


def diff_text(cell: Cell | None, paper: float | None) -> str:
    if paper is None or cell is None or cell.n == 0:
        return ""
    return f"{100 * cell.mean - paper:+.2f}"


def verdict(cell: Cell | None, paper: float | None, n_images: int | None = None) -> str:
    """Whether the paper's number lies in our 95% interval of the mean (`stats.intervals`: t
    over seeds; for one seed, the Wilson interval of its `n_images` test images)."""
    if paper is None or cell is None or cell.n == 0:
        return ""
    one = cell.n < 2 or math.isnan(cell.half95)
    if one and not n_images:
        return "n=1: no interval"
    interval = cell_interval(cell.values or (cell.mean,), n_images or 0)
    where = place(paper, interval)
    if where == INSIDE:
        return "yes (Wilson)" if one else "yes"
    said = "no: paper higher" if where == ABOVE else "no: paper lower"
    return f"{said} (Wilson)" if one else said


def cell_data(cell: Cell | None) -> dict | None:
    if cell is None:
        return None
    nan = math.isnan
    return {
        "mean": None if nan(cell.mean) else cell.mean,
        "half95": None if nan(cell.half95) else cell.half95,
        "n": cell.n,
        "values": list(cell.values),
    }


def split_note(view: RunView) -> str:
    """Which data chose the epochs and the winners, in one sentence."""
    split = view.split
    n_test = split.get("n_test", 10_000)
    subset = ", a stratified subset of the 10,000" if n_test < 10_000 else ""
    staged = view.protocol is ProtocolKind.STAGED
    once = "per stage winner and seed" if staged else "for the final model"
    if view.is_leaky:
        return (
            f"Split: early stopping and selection read the test set ({n_test:,} images{subset}): "
            "the leak, explained at the top."
        )
    return (
        f"Split: early stopping and selection read a validation split of "
        f"{split.get('validation_size', view.study.validation_size):,} training images "
        f"(split seed {split.get('validation_seed', view.study.validation_seed)}); training used "
        f"{split.get('n_train', 0):,} images; the test set ({n_test:,} images{subset}) was "
        f"evaluated once {once}, at the epoch the validation split chose."
    )


@dataclass(frozen=True)
class Comparison:
    """A row of ours against the paper's number."""

    ours: Cell | None  # test accuracy where we have it, else the selection accuracy
    basis: str  # "test" or "val"
    paper: float | None  # %
    same_config: bool  # whether the paper measured the same configuration


def compare(row: Row, published: Published | None) -> Comparison:
    # The paper's numbers are test accuracies: compare with ours on the test set where we have
    # it; a clean run measures test accuracy only for stage winners, so the other rows compare
    # validation accuracy, and say so.
    ours, basis = (row.test, "test") if row.test and row.test.n else (row.selection, "val")
    if published is None:
        return Comparison(ours, basis, row.published, True)
    same = published.factors == factors_of(row.config)
    return Comparison(ours, basis, published.accuracy, same)


def stage_table(view: RunView, table: StageTable, published: dict[str, Published]) -> Table:
    """One of Tables I-IV: ours (mean ± CI, n) beside the paper's number and the difference."""
    clean = not view.is_leaky
    columns = ["", factor_title(table.factor)]
    columns += ["Layers"] if table.factor == "topology" else []
    columns += ["validation acc (%)", "test acc (%)"] if clean else ["test acc (%)"]
    columns += ["paper (%)", "difference (pp)", "paper in our 95% CI", "best epoch", "epochs run"]
    rows, data, marked, other = [], [], [], None
    n_test = view.split.get("n_test") or None
    for i, row in enumerate(table.rows):
        cmp = compare(row, published.get(row.label))
        cells = [WINNER if row.is_winner else "", row.label]
        if table.factor == "topology":
            cells.append(str(list(row.config.dense_sizes)))
        n_sel = None if clean else n_test  # one seed: the Wilson interval of the test images
        cells += ([cell_text(row.selection), cell_text(row.test, n_test)] if clean
                  else [cell_text(cmp.ours, n_sel)])  # fmt: skip
        diff = diff_text(cmp.ours, cmp.paper)
        if diff and clean and cmp.basis == "val":
            diff += " (val)"
        if diff and not cmp.same_config:
            diff += " †"
            other = published[row.label]
        cells += [
            "" if cmp.paper is None else f"{cmp.paper:.1f}",
            diff,
            verdict(cmp.ours, cmp.paper, n_test if cmp.basis == "test" else None)
            if cmp.same_config
            else "other configuration",
            ",".join(map(str, row.best_epochs)),
            ",".join(map(str, row.epochs)),
        ]
        rows.append(tuple(cells))
        marked += [i] if row.is_winner else []
        data.append(_row_data(row, cmp.paper) | {"same_config_as_paper": cmp.same_config})
    notes = [
        f"{WINNER} marks the stage winner, carried forward to the next stage. Rule: {table.rule}.",
        split_note(view),
        "paper: the published accuracy (%) for the row's value; difference: ours minus the "
        "paper's, in percentage points.",
    ]
    seeds = {s for r in table.rows for s in r.seeds}
    if len(seeds) == 1:
        notes.append(
            "One seed: every row shares its batch order, so the rows' early stopping "
            "is correlated; the interval is Wilson's, the test set's own noise."
        )
    capped = [
        r.label
        for r in table.rows
        for rec in _records(view, r)
        if rec.epochs >= rec.config.max_epochs and rec.best_epoch == rec.epochs
    ]
    if capped:
        notes.append(
            f"Hit the {view.study.max_epochs}-epoch cap while still improving: "
            f"{', '.join(dict.fromkeys(capped))}; more epochs might raise them."
        )
    if other is not None:
        fixed = ", ".join(
            f"{factor_title(f).lower()} {factor_label(f, v)}"
            for f, v in zip(FACTOR_KEYS, other.factors, strict=True)
            if f != table.factor
        )
        notes.append(
            f"† The paper measured these rows with {fixed} (its own earlier winners); this "
            "run's earlier stages chose differently, so they compare different configurations."
        )
    return Table(
        f"table-{table.index}-{table.name}",
        table.title or table.name,
        tuple(columns),
        tuple(rows),
        tuple(notes),
        tuple(marked),
        tuple(data),
    )


def _records(view: RunView, row: Row) -> list:
    by_number = view.by_number
    return [by_number[n] for n in row.trial_numbers if n in by_number]


def _row_data(row: Row, paper: float | None) -> dict:
    return {
        "label": row.label,
        "config": row.config.to_dict(),
        "seeds": list(row.seeds),
        "selection": cell_data(row.selection),
        "test": cell_data(row.test),
        "paper": paper,
        "winner": row.is_winner,
        "best_epochs": list(row.best_epochs),
        "epochs": list(row.epochs),
        "trial_numbers": list(row.trial_numbers),
    }


def best_configs(view: RunView, table: StageTable, k: int = 10) -> Table:
    """The k best configurations of a grid or search run (its table is sorted best first)."""
    rows = [r for r in table.rows if r.selection.n][:k]
    has_test = any(r.test and r.test.n for r in rows) and not view.is_leaky
    columns = ["rank", "configuration", f"{table.selection} acc (%)"]
    columns += ["test acc (%)"] if has_test else []
    columns += ["best epoch", "outcome"]
    cells = []
    for i, row in enumerate(rows, 1):
        line = [str(i), row.label, cell_text(row.selection)]
        line += [cell_text(row.test)] if has_test else []
        line += [",".join(map(str, row.best_epochs)), ",".join(row.outcomes)]
        cells.append(tuple(line))
    return Table(
        f"best-{table.name}",
        f"Best {len(rows)} of {len(table.rows)} configurations ({table.name})",
        tuple(columns),
        tuple(cells),
        (f"Rule: {table.rule}.", split_note(view)),
        (0,) if rows else (),
        tuple(_row_data(r, None) for r in rows),
    )


def confirmation_table(search: StageTable, confirmed: StageTable) -> Table:
    """Search runs: each confirmed configuration's search-time score beside its confirmed mean
    on new seeds, and by how much the search score overstated it (the winner's curse)."""
    scores = {r.label: r.selection for r in search.rows}
    gaps = [100 * g for g in overstatement(search.rows, confirmed.rows)]
    cells = [(row.label, cell_text(scores.get(row.label)), cell_text(row.selection), f"{gap:+.2f}")
             for row, gap in zip(confirmed.rows, gaps, strict=True)]  # fmt: skip
    usable = [g for g in gaps if g == g]
    mean_gap = sum(usable) / len(usable) if usable else float("nan")
    sentence = (f"The search-time score overstated the confirmed score by {mean_gap:+.2f} pp on "
                "average (winner's curse): a search score is the best of many tries.")  # fmt: skip
    return Table(
        "confirmation",
        f"Confirmation: the search's top {len(cells)} on new seeds",
        (
            "configuration",
            f"search score ({search.selection}, %)",
            f"confirmed ({confirmed.selection}, %)",
            "overstated by (pp)",
        ),
        tuple(cells),
        (sentence, f"Rule: {confirmed.rule}."),
        tuple(i for i, r in enumerate(confirmed.rows) if r.is_winner),
        tuple(
            {"label": r.label, "overstated_pp": g}
            for r, g in zip(confirmed.rows, gaps, strict=True)
        ),
    )


def main_effects_table(effects: dict[str, list[tuple[str, Cell]]]) -> Table:
    rows, data = [], []
    for factor, levels in effects.items():
        best = max((c.mean for _, c in levels if c.n), default=math.nan)
        for label, cell in levels:
            mark = WINNER if cell.n and cell.mean == best else ""
            rows.append((mark, factor_title(factor), label, cell_text(cell)))
            data.append({"factor": factor, "level": label, "accuracy": cell_data(cell)})
    return Table(
        "main-effects",
        "Main effects: mean accuracy per level",
        ("", "factor", "level", "mean acc (%) ± 95% CI (n configurations)"),
        tuple(rows),
        (
            "Each configuration counts once (its mean over seeds); n is the number of "
            f"configurations at that level; {WINNER} marks the best level of each factor.",
        ),
        tuple(i for i, r in enumerate(rows) if r[0]),
        tuple(data),
    )


def importance_table(found: Importances) -> Table:
    rows = tuple((factor_title(k), f"{v:.3f}") for k, v in found.values.items())
    notes = [
        f"{found.method} (Optuna's importance evaluator): the share of the variance of the "
        "selection accuracy over the complete trials that each factor explains; they sum to 1."
    ]
    if found.reason:
        notes.append(f"{'Note' if found.values else 'No importances'}: {found.reason}.")
    return Table(
        "importances",
        f"Parameter importances ({found.method})",
        ("factor", "importance"),
        rows,
        tuple(notes),
        (0,) if rows else (),
        tuple(
            {"factor": k, "importance": v, "method": found.method} for k, v in found.values.items()
        ),
    )


def cost_table(costs: Sequence[StageCost]) -> Table:
    rows = tuple((c.stage, str(c.n_trials), str(c.epochs), f"{c.wall_s:.1f}") for c in costs)
    return Table(
        "costs",
        "Wall time per stage",
        ("stage", "trials trained", "model-epochs", "training wall time (s)"),
        rows,
        (
            "A trial reused by a later stage counts where it was first trained; wall time is each "
            "trial's share of its population's training time.",
        ),
        data=tuple(vars(c) for c in costs),
    )


def key_value_table(key: str, title: str, pairs: Sequence[tuple[str, str]], note: str = ""):
    return Table(key, title, ("", "value"), tuple(pairs), (note,) if note else ())
