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
    claims = replication.claims
    counts = replication.counts
    numbers, configs = counts["numbers"], counts["configurations"]
    said = Counter(c.verdict for c in claims)
    blocks: list[Block] = [Heading(2, "Verdict", "verdict")]
    if replication.headline:
        blocks.append(Text(replication.headline, "note"))
    blocks.append(Text(
        f"Of the paper's {numbers['total']} published numbers ({configs['total']} "
        f"configurations), {numbers[v.CONSISTENT]} are consistent with one run of ours (inside "
        f"our 95% prediction interval), {numbers[v.ABOVE]} above it, {numbers[v.BELOW]} below it "
        f"and {numbers[v.DIVERGED]} on configurations that diverged; of the "
        f"{configs['total']} configurations, {configs['consistent']} are consistent throughout, "
        f"{configs['outside']} have a number outside and {configs['diverged']} diverged. Of its "
        f"{len(claims)} conclusions, {said[v.SUPPORTED]} are supported, {said[v.PARTLY]} partly "
        f"supported, {said[v.CONTRADICTED]} contradicted and {said[v.INCONCLUSIVE]} "
        f"inconclusive (Holm-adjusted over all their comparisons). Each cell is the paper's own "
        f"configuration trained with {replication.n_seeds} seeds "
        f"({', '.join(map(str, seeds))}) under the paper's metric.", "note"))  # fmt: skip
    blocks.append(claims_table(claims))
    blocks += recommendation(replication)
    blocks.append(cells_table(replication))
    for note in replication.notes:
        blocks.append(Text(note, "warning"))
    if replication.leak:
        blocks.append(leak_table(replication.leak))
        if replication.pooled_leak is not None:
            blocks.append(Text(pooled_leak_text(replication.pooled_leak), "note"))
    return blocks


def pooled_leak_text(pooled) -> str:
    """The leak in one sentence: the pooled gap and, with the held-out arm, its two parts."""
    t = pooled.total
    text = (f"The leak over all {pooled.n_configs} configurations that train and their seeds "
            f"({t.n} pairs): the paper's protocol reads {_pp(t.estimate)} pp [{_pp(t.low)}, "
            f"{_pp(t.high)}] above the clean test accuracy (paired t over the pairs, "
            f"p {t.p_value:.2g}).")  # fmt: skip
    if pooled.selection is not None:
        a, b = pooled.selection, pooled.size
        text += (f" Of that, choosing the epoch on the test set gives {_pp(a.estimate)} pp "
                 f"[{_pp(a.low)}, {_pp(a.high)}] (the same {pooled.n_train_clean:,} training "
                 f"images) and training on {pooled.n_train:,} instead of "
                 f"{pooled.n_train_clean:,} images {_pp(b.estimate)} pp [{_pp(b.low)}, "
                 f"{_pp(b.high)}].")  # fmt: skip
    return text


def leak_table(gaps) -> Table:
    """`--with-clean`: the paper's protocol against the clean one, configuration by config."""
    rows, data = [], []
    for g in gaps:
        gap = g.gap
        held = _interval_text(g.held_out) if g.held_out is not None else "–"
        rows.append((_config_text(g.config), _interval_text(g.leaky),
                     _interval_text(g.clean_validation), _interval_text(g.clean_test), held,
                     f"{_pp(gap.estimate)} [{_pp(gap.low)}, {_pp(gap.high)}]",
                     str(gap.n)))  # fmt: skip
        data.append(g.to_dict())
    return Table(
        "leak-per-cell", "The leak, cell by cell: selection on test vs on validation",
        ("configuration", "paper's protocol: test acc (%)", "clean: validation acc (%)",
         "clean: test acc, read once (%)", "test-selected on the clean split (%)",
         "gap (pp) [95% interval]", "n"),
        tuple(rows),
        ("The same configurations and seeds trained three times: once as the paper did (early "
         "stopping and the reported number on the test set), once on 54,000 training images "
         "with stopping on a 6,000-image validation split and the test set read once at the "
         "chosen epoch; and a third time as the paper did but on the clean run's 54,000 training "
         "images. Gap: the paper's protocol minus the clean test accuracy, a paired t-interval "
         "over the seeds; the third arm splits it into the smaller training set and the "
         "choice on the test set.",),
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
        shown = "; ".join((*claim.holds, *claim.fails, *claim.unclear))
        rows.append((claim.id, claim.text, claim.verdict.upper(), _pp(claim.estimate),
                     f"[{_pp(low)}, {_pp(high)}]", str(claim.n), shown, claim.test))  # fmt: skip
        data.append(claim.to_dict())
    return Table(
        "claims", "The paper's conclusions",
        ("", "claim", "verdict", "estimate (pp)", "95% interval (pp)", "n",
         "what holds and what fails", "test"),
        tuple(rows),
        ("Every comparison of every claim (the claimed winner minus each alternative, paired "
         "over the shared seeds; for the final accuracy, ours minus the claimed number) is a "
         "t-test, and all their p-values are adjusted together with Holm's method, which keeps "
         "the chance of any false 'beats' in the whole family at 5% whatever the correlation "
         "between the tests (they share configurations and seeds). Supported: the winner beats "
         "every alternative (adjusted p < 0.05). Contradicted: an alternative beats it. Partly "
         "supported: it beats some and none beats it. Inconclusive: no comparison is "
         "significant.",),
        data=tuple(data),
    )  # fmt: skip


def cells_table(replication) -> Table:
    rows, data, marked = [], [], []
    for i, cell in enumerate(replication.cells):
        d = cell.to_dict()
        interval = (f"{_p(d['mean'])} [{_p(d['ci95'][0])}, {_p(d['ci95'][1])}]"
                    if d["mean"] is not None else "–")  # fmt: skip
        spread = f"{_p(d['min'])}–{_p(d['max'])}" if d["min"] is not None else "–"
        low, high = d["prediction95"]
        prediction = f"[{_p(low)}, {_p(high)}]" if low is not None else "–"
        rows.append((f"Table {cell.cell.table}", cell.cell.row, _config_text(cell.config),
                     f"{cell.cell.published:.1f}", interval, prediction, _p(d["sd"]),
                     str(d["n"]), spread, cell.verdict or "no interval",
                     "; ".join(cell.flags)))  # fmt: skip
        marked += [i] if cell.verdict and cell.verdict != v.CONSISTENT else []
        data.append(d)
    method = replication.cells[0].interval.method if replication.cells else ""
    return Table(
        "replication-cells", "Every published number against ours",
        ("table", "row", "configuration", "paper (%)", "ours: mean [95% interval] (%)",
         "one run: 95% prediction interval (%)", "sd (%)", "n", "min–max (%)", "verdict",
         "flags"),
        tuple(rows),
        (f"Mean interval: {method} (Student's t; Wilson's interval on the "
         f"{replication.n_test:,} test images where one seed is all there is). Each published "
         "number is one run, so it is judged against where one run of ours would land: the "
         "prediction interval mean ± t(n−1)·s·√(1 + 1/n). 'consistent': inside it (one of our "
         "runs could have given that number; not a confirmation); 'above'/'below': outside; "
         "'diverged': a seed diverged or stayed at chance, so the mean is no accuracy. "
         "Highlighted rows are not consistent. Each accuracy is the best test accuracy of a "
         "seed, the paper's metric, so it carries the leak the paper's protocol has.",),
        tuple(marked),
        tuple(data),
    )  # fmt: skip


def recommendation(replication) -> list[Block]:
    """The configuration to use and the final model: one configuration, named once."""
    rec, final = replication.recommended, replication.final_model
    if rec is None:
        return []
    text = "Which configuration to use: " + rec.text(replication.n_seeds)
    if final is not None:
        text += (f" The final model is this configuration at the first seed ({final.seed}, "
                 f"fixed in advance): {_p(100 * final.accuracy)}% test accuracy.")  # fmt: skip
    paper = replication.paper_choice
    if paper is not None:
        text += (f" The paper's choice, {_config_text(paper.config)}, has our mean "
                 f"{_p(100 * paper.interval.mean)}% [{_p(100 * paper.interval.low)}, "
                 f"{_p(100 * paper.interval.high)}].")  # fmt: skip
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
