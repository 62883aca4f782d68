"""The report's opening: the verdict on the paper, and how far each stage winner is from noise.

    >>> replication = replication_of(view)  # None unless a replicate run
    >>> blocks = verdict_section(replication, view.study.seeds)  # cells, claims, what to use
    >>> blocks = noise_section(view)        # staged runs: each winner against its runner-up

A replicate run re-measured every published number (`hpstudy.protocols.replicate`); its verdict
comes first. A staged run with one seed chose its winners by margins that the test set's own
sampling noise can swallow, so every stage's winner is compared with its runner-up by a paired
test: McNemar's exact test on the same test images for one seed, a paired t-interval over
shared seeds for several.
"""

from __future__ import annotations

import math
from collections import Counter

from hpstudy.config.study import ProtocolKind
from hpstudy.report.loader import RunView
from hpstudy.report.render import Block, Heading, Text
from hpstudy.report.report_tables import Table
from hpstudy.stats import verdict as v
from hpstudy.stats.tables import StageTable

STAGED = ProtocolKind.STAGED.value  # StageTable.protocol of a staged stage, as stored

PAPER_TITLE = ("Hyperparameter Tuning of Neural Networks Using PyTorch: A Comparative Study on "
               "FashionMNIST")  # fmt: skip
PAPER_CITATION = (f"*{PAPER_TITLE}*, A. Konycheva (Technical University of Košice); the text "
                  "names no venue")  # fmt: skip
PAPER_PATH = "T4 → Adam → lr 0.005 → ReLU, 89.5%"


def replication_of(view: RunView):
    """The run's `Replication` (recomputed from its records), or None for other protocols."""
    from hpstudy.protocols import make_protocol

    if view.protocol is not ProtocolKind.REPLICATE:
        return None
    return make_protocol(view.study).replication(
        view.records, split=view.split, tests=view.tests, clean_split=view.info.get("clean_split")
    )


def verdict_section(replication, seeds: tuple[int, ...]) -> list[Block]:
    """Cells and claims first, then what a reader should use and how sure we are."""
    if replication is None or not replication.cells:
        return []
    cells, claims = replication.cells, replication.claims
    places = Counter(c.verdict for c in cells)
    said = Counter(c.verdict for c in claims)
    blocks: list[Block] = [Heading(2, "Verdict", "verdict")]
    blocks.append(Text(
        f"Of the paper's {len(cells)} published numbers, {places[v.INSIDE]} lie inside our 95% "
        f"interval, {places[v.ABOVE]} above it (the paper reports more than we measure) and "
        f"{places[v.BELOW]} below it. Of its {len(claims)} conclusions, {said[v.SUPPORTED]} are "
        f"supported, {said[v.CONTRADICTED]} contradicted and {said[v.INCONCLUSIVE]} "
        f"inconclusive. Each cell is the paper's own configuration trained with "
        f"{replication.n_seeds} seeds ({', '.join(map(str, seeds))}) under the "
        "paper's metric.", "note"))  # fmt: skip
    blocks.append(claims_table(claims))
    blocks += recommendation(replication)
    blocks.append(cells_table(replication))
    for note in replication.notes:
        blocks.append(Text(note, "warning"))
    if replication.leak:
        blocks.append(leak_table(replication.leak))
    return blocks


def leak_table(gaps) -> Table:
    """`--with-clean`: the paper's protocol against the clean one, configuration by config."""
    rows, data = [], []
    for g in gaps:
        gap = g.gap
        rows.append((_config_text(g.config), _interval_text(g.leaky),
                     _interval_text(g.clean_validation), _interval_text(g.clean_test),
                     f"{_pp(gap.estimate)} [{_pp(gap.low)}, {_pp(gap.high)}]",
                     str(gap.n)))  # fmt: skip
        data.append(g.to_dict())
    return Table(
        "leak-per-cell", "The leak, cell by cell: selection on test vs on validation",
        ("configuration", "paper's protocol: test acc (%)", "clean: validation acc (%)",
         "clean: test acc, read once (%)", "gap (pp) [95% interval]", "n"),
        tuple(rows),
        ("The same configurations and seeds trained twice: once as the paper did (early "
         "stopping and the reported number on the test set), once on 54,000 training images "
         "with stopping on a 6,000-image validation split and the test set read once at the "
         "chosen epoch. Gap: the first minus the last, a paired t-interval over the seeds. It "
         "mixes the leak's optimism with the clean run's 10% smaller training set.",),
        data=tuple(data),
    )  # fmt: skip


def _interval_text(interval) -> str:
    if math.isnan(interval.mean):
        return "–"
    return (f"{100 * interval.mean:.2f} [{_p(100 * interval.low)}, "
            f"{_p(100 * interval.high)}]")  # fmt: skip


def claims_table(claims) -> Table:
    rows, data = [], []
    for claim in claims:
        low, high = claim.ci95
        rows.append((claim.id, claim.text, claim.verdict.upper(), _pp(claim.estimate),
                     f"[{_pp(low)}, {_pp(high)}]", str(claim.n), claim.test))  # fmt: skip
        data.append(claim.to_dict())
    return Table(
        "claims", "The paper's conclusions",
        ("", "claim", "verdict", "estimate (pp)", "95% interval (pp)", "n", "test"),
        tuple(rows),
        ("Supported: the interval of the claimed winner's advantage lies above 0 against every "
         "alternative (or, for a number, our interval is not wholly below it). Contradicted: an "
         "alternative is better with its interval below 0 (or our interval lies wholly below "
         "the number). Inconclusive: the interval straddles 0, so the seeds cannot tell the "
         "two apart.",),
        data=tuple(data),
    )  # fmt: skip


def cells_table(replication) -> Table:
    rows, data, marked = [], [], []
    for i, cell in enumerate(replication.cells):
        d = cell.to_dict()
        interval = (f"{_p(d['mean'])} [{_p(d['ci95'][0])}, {_p(d['ci95'][1])}]"
                    if d["mean"] is not None else "–")  # fmt: skip
        spread = f"{_p(d['min'])}–{_p(d['max'])}" if d["min"] is not None else "–"
        rows.append((f"Table {cell.cell.table}", cell.cell.row, _config_text(cell.config),
                     f"{cell.cell.published:.1f}", interval, str(d["n"]), spread,
                     cell.verdict or "no interval", "; ".join(cell.flags)))  # fmt: skip
        marked += [i] if cell.verdict and cell.verdict != v.INSIDE else []
        data.append(d)
    method = replication.cells[0].interval.method if replication.cells else ""
    return Table(
        "replication-cells", "Every published number against ours",
        ("table", "row", "configuration", "paper (%)", "ours: mean [95% interval] (%)", "n",
         "min–max (%)", "paper's number is", "flags"),
        tuple(rows),
        (f"Interval: {method} (Student's t; Wilson's interval on the "
         f"{replication.n_test:,} test images where one seed is all there is). 'above': the "
         "paper's number is higher than our whole interval; 'below': lower. Highlighted rows "
         "lie outside. Each accuracy is the best test accuracy of a seed, the paper's metric, "
         "so it carries the leak the paper's protocol has.",),
        tuple(marked),
        tuple(data),
    )  # fmt: skip


def recommendation(replication) -> list[Block]:
    """The best cell by mean, and the cells the seeds cannot tell from it."""
    distinct = {}
    for cell in replication.cells:
        distinct.setdefault(_config_text(cell.config), cell)
    ranked = sorted(distinct.values(), key=lambda c: -_finite(c.interval.mean))
    if not ranked or math.isnan(ranked[0].interval.mean):
        return []
    best = ranked[0]
    ties = []
    for other in ranked[1:]:
        diff = v.paired_difference(best.accuracies, other.accuracies)
        if diff.n < 2 or diff.low <= 0:
            ties.append(f"{_config_text(other.config)} ({_pp(-diff.estimate)} pp)")
    text = (f"Which configuration to use: {_config_text(best.config)}, the best mean of the "
            f"paper's configurations ({_p(100 * best.interval.mean)}%, 95% interval "
            f"{_p(100 * best.interval.low)}–{_p(100 * best.interval.high)}).")  # fmt: skip
    if ties:
        text += (" How sure we are: the seeds cannot tell it apart (paired t-interval of the "
                 "difference includes 0) from " + "; ".join(ties) + ", so treat these as "
                 "equally good.")  # fmt: skip
    else:
        text += " It beats every other published configuration by a paired t-interval above 0."
    return [Text(text, "note")]


def noise_section(view: RunView) -> list[Block]:
    """Each stage's winner against its runner-up, by a paired test on shared seeds or images."""
    tables = [t for t in view.tables if t.protocol == STAGED and len(t.rows) > 1]
    if not tables:
        return []
    by_number = view.by_number
    rows, data, unclear = [], [], []
    for table in tables:
        found = _winner_vs_runner_up(table, by_number)
        if found is None:
            continue
        winner, runner_up, test, p, estimate = found
        clear = p < 1 - v.CONFIDENCE
        rows.append((table.title or table.name, winner.label, runner_up.label, _pp(estimate),
                     test, f"{p:.3g}", "yes" if clear else "NO"))  # fmt: skip
        data.append({"stage": table.name, "winner": winner.label, "runner_up": runner_up.label,
                     "difference_pp": estimate, "test": test, "p_value": p,
                     "distinguishable": clear})  # fmt: skip
        if not clear:
            unclear.append(f"{table.name} ({winner.label} over {runner_up.label})")
    blocks: list[Block] = [Heading(2, "Are the stage winners real?", "winners-vs-noise")]
    blocks.append(Table(
        "winners-vs-noise", "Each stage's winner against its runner-up",
        ("stage", "winner", "runner-up", "difference (pp)", "test", "p", "distinguishable"),
        tuple(rows),
        ("A stage's winner is distinguishable when the paired test's two-sided p is below "
         "0.05. One seed: McNemar's exact test on the images both trials classified (the test "
         "set's own noise; the two trials share their batch order, so their early stopping is "
         "correlated too). Several seeds: a paired t-test over the shared seeds.",),
        data=tuple(data)))  # fmt: skip
    if unclear:
        blocks.append(Text("Not distinguishable from the runner-up: " + "; ".join(unclear)
                           + ". These choices are within the noise: another seed may pick "
                           "another winner, and every later stage inherits the choice.",
                           "warning"))  # fmt: skip
    return blocks


def _winner_vs_runner_up(table: StageTable, by_number: dict):
    ranked = sorted((r for r in table.rows if r.selection.n),
                    key=lambda r: -r.selection.mean)  # fmt: skip
    if len(ranked) < 2:
        return None
    winner, runner_up = ranked[0], ranked[1]
    if len(winner.seeds) == 1:
        a, b = by_number[winner.trial_numbers[0]], by_number[runner_up.trial_numbers[0]]
        if a.correct_mask is None or b.correct_mask is None:
            return None
        if len(a.correct_mask) != len(b.correct_mask):
            return None
        test = v.mcnemar(a.correct_mask, b.correct_mask)
        estimate = 100 * (winner.selection.mean - runner_up.selection.mean)
        name = f"McNemar exact ({test.only_a} vs {test.only_b} discordant images)"
        return winner, runner_up, name, test.p_value, estimate
    diff = v.paired_difference(winner.selection.values, runner_up.selection.values)
    return winner, runner_up, f"paired t over {diff.n} seeds", diff.p_value, diff.estimate


def paper_path_text(view: RunView) -> str:
    """'The paper's path: ... Ours (seed 42): ...'"""
    staged = [t for t in view.tables if t.protocol == STAGED]
    ours = " → ".join(t.winner.label for t in staged if t.winner is not None)
    seeds = {s for t in staged for r in t.rows for s in r.seeds}
    which = f"seed {min(seeds)}" if len(seeds) == 1 else f"{len(seeds)} seeds"
    text = f"The paper's path: {PAPER_PATH}."
    if ours:
        text += f" Ours, by the paper's own staged method ({which}): {ours}."
    return text


def _config_text(config) -> str:
    from hpstudy.config.factors import config_text

    return config_text(config)


def _finite(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def _pp(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:+.2f}"


def _p(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"
