"""The tables that set a run beside its sibling runs: the leakage gap and the staged winner's rank.

    >>> leakage_table(metrics.leakage_gap(paper, clean), paper, clean)  # test vs validation
    >>> rank_table([(paper, grid, metrics.rank_in(grid.tables[0], paper.winner.config,
    ...                                           grid.finished))])
    >>> budget(paper)   # 'paper: 60,000 training images, at most 20 epochs, patience 3, ...'

A run's own tables (`hpstudy.report.report_tables`) read one run; these read two: the run and a
sibling that `hpstudy.report.loader.find_related` found (same data, same budget) or that the
caller named. Each says the runs' budgets, so a reader can see what was compared with what. They
are `Table`s like the others, printed by both renderers in the report's comparison section; the
numbers come from `hpstudy.report.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence

from hpstudy.config.factors import config_label
from hpstudy.report.loader import RunView
from hpstudy.report.metrics import GapRow
from hpstudy.report.report_tables import Table, cell_data, cell_text
from hpstudy.stats.verdict import Difference, p_text


def leakage_table(rows: Sequence[GapRow], leaky: RunView, clean: RunView) -> Table:
    lines, data = [], []
    for r in rows:
        gap = (
            f"{100 * (r.leaky.mean - r.clean_test.mean):+.2f}"
            if r.leaky.n and r.clean_test.n
            else ""
        )
        lines.append((config_label(r.config), cell_text(r.leaky), cell_text(r.clean_selection),
                      cell_text(r.clean_test), gap))  # fmt: skip
        data.append({"config": r.config.to_dict(), "leaky": cell_data(r.leaky),
                     "clean_selection": cell_data(r.clean_selection),
                     "clean_test": cell_data(r.clean_test)})  # fmt: skip
    return Table(
        f"leakage-gap-{clean.name}",
        f"The leakage gap: {leaky.name} (selection on test) vs {clean.name} (on validation)",
        (
            "configuration",
            f"{leaky.name}: test acc (%), epoch chosen on test",
            f"{clean.name}: validation acc (%)",
            f"{clean.name}: test acc (%), measured once",
            "gap (pp)",
        ),
        tuple(lines),
        (
            "The same configurations under both protocols. Where the test set picks the epoch, "
            "the reported test accuracy is the maximum of a noisy curve and so is biased upward; "
            "the clean run measures test accuracy once, at the epoch its validation split chose, "
            "so the gap (leaky minus clean test accuracy) estimates that optimism (the clean run "
            "also trains on fewer images: those it holds out for validation).",
            f"{budget(leaky)}; {budget(clean)}. Clean test accuracies exist for stage "
            "winners only.",
        ),
        data=tuple(data),
    )


def gap_text(gap: Difference | None) -> str:
    """'-1.23 [-1.80, -0.66], p 0.004, n 5'; one seed: '-1.23 (one seed)'; '' for none."""
    if gap is None or gap.n == 0:
        return ""
    if gap.n == 1:
        return f"{gap.estimate:+.2f} (one seed)"
    interval = f"[{gap.low:+.2f}, {gap.high:+.2f}]"
    return f"{gap.estimate:+.2f} {interval}, p {p_text(gap.p_value)}, n {gap.n}"


def budget(view: RunView) -> str:
    """'paper: 60,000 training images, at most 20 epochs, patience 3, batch 64, seeds 42'."""
    study = view.study
    return (
        f"{view.name}: {view.split.get('n_train', 0):,} training images, at most "
        f"{study.max_epochs} epochs, patience {study.patience}, batch {study.batch_size}, "
        f"seeds {', '.join(map(str, study.seeds))}"
    )


def rank_table(entries: Sequence[tuple[RunView, RunView, object]]) -> Table:
    """(staged run, grid run, Rank or None) -> where each staged winner ranks in each grid."""
    rows, data = [], []
    for staged, grid, rank in entries:
        winner = staged.winner
        label = config_label(winner.config)
        if rank is None:
            rows.append((staged.name, label, grid.name, "not in the grid's space", "", "", ""))
            data.append({"staged": staged.name, "grid": grid.name, "rank": None})
            continue
        rows.append((staged.name, label, grid.name, f"{rank.rank} of {rank.n}",
                     cell_text(rank.row.selection),
                     f"{rank.best.label}: {cell_text(rank.best.selection)}",
                     gap_text(rank.gap)))  # fmt: skip
        data.append({"staged": staged.name, "grid": grid.name, "rank": rank.rank, "n": rank.n,
                     "accuracy": cell_data(rank.row.selection),
                     "best": cell_data(rank.best.selection),
                     "gap": rank.gap.to_dict() if rank.gap else None})  # fmt: skip
    return Table(
        "staged-vs-grid",
        "What the staged search missed: its winner's rank in the full grid",
        (
            "staged run",
            "its final configuration",
            "grid run",
            "rank in the grid",
            "its grid acc (%)",
            "grid's best (%)",
            "it minus the best (pp)",
        ),
        tuple(rows),
        (
            "Ranked by the grid run's own selection accuracy (its split, its seeds); rows with "
            "equal means share a rank. Its gap to the grid's best is paired seed by seed over the "
            "seeds both trained: mean difference, 95% paired t-interval, paired t-test p and n "
            "seeds (one seed: the difference alone). The best is the largest of many means, so "
            "the gap leans large (the winner's curse). Configurations match on topology, "
            "optimizer, learning rate and activation; the budgets: "
            + "; ".join(sorted({budget(v) for e in entries for v in e[:2]}))
            + ".",
        ),
        data=tuple(data),
    )
