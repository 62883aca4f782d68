"""The report's opening: the verdict on the paper, and how far each stage winner is from noise.

    >>> replication = replication_of(view)  # None unless a replicate run
    >>> blocks = verdict_section(replication, view.study.seeds)  # cells, claims, what to use
    >>> blocks = noise_section(view)        # staged runs: each winner against its runner-up

A replicate run re-measured every published number (`hpstudy.tabulate.replication`); its verdict
comes first. A staged run with one seed chose its winners by margins that the test set's own
sampling noise can swallow, so every stage's winner is compared with its runner-up by a paired
test: McNemar's exact test on the same test images for one seed, a paired t-interval over
shared seeds for several.
"""

from __future__ import annotations

import math

from hpstudy.config.study import ProtocolKind
from hpstudy.report.answer import cell_verdict, recommended_blocks
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
    from hpstudy.tabulate import judge_run

    return judge_run(view.study, view.records, view.split, tests=view.tests,
                     clean_split=view.info.get("clean_split"))  # fmt: skip


def question_title(view: RunView) -> str:
    """The page's title: the question a replication answers."""
    return f"Does '{PAPER_TITLE}' hold?"


def verdict_section(replication, seeds: tuple[int, ...]) -> list[Block]:
    """Cells and claims first, then what a reader should use and how sure we are."""
    if replication is None or not replication.cells:
        return []
    data = replication.to_dict()
    blocks: list[Block] = [Heading(2, "Verdict", "verdict")]
    if replication.headline:
        blocks.append(Text(replication.headline, "note"))
    blocks.append(Text(
        f"The paper: {PAPER_CITATION}. Each published number is the paper's own configuration "
        f"trained with {data.get('n_seeds', len(seeds))} seeds ({', '.join(map(str, seeds))}) "
        "under the paper's metric. The paper reports one run (seed 42) per number, so a number "
        "is judged against where one run of ours would land.", "note"))  # fmt: skip
    blocks.append(claims_table(data.get("claims", [])))
    blocks += recommended_blocks(data)
    blocks.append(cells_table(data))
    for note in data.get("notes", []):
        blocks.append(Text(note, "note"))
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
    """One row per comparison a claim makes (claimed winner minus each alternative)."""
    rows, data = [], []
    tests = []
    for claim in claims:
        claim = claim if isinstance(claim, dict) else claim.to_dict()
        comparisons = claim.get("comparisons")
        if comparisons is None:  # an older replication.json: the deciding comparison only
            comparisons = [
                {
                    "alternative": "the deciding alternative",
                    "estimate": claim.get("estimate"),
                    "ci95": claim.get("ci95"),
                }
            ]
        for j, comp in enumerate(comparisons):
            low, high = _pair(comp.get("ci95"))
            rows.append((claim["id"] if j == 0 else "", claim["text"] if j == 0 else "",
                         str(claim["verdict"]) if j == 0 else "",
                         str(comp.get("alternative", "")), _pp(comp.get("estimate")),
                         f"[{_pp(low)}, {_pp(high)}]", _pv(comp.get("p")),
                         _pv(comp.get("p_holm"))))  # fmt: skip
        if claim.get("test"):
            tests.append(f"{claim['id']}: {claim['test']}.")
        data.append(claim)
    notes = ["Each row: the claimed winner minus one alternative, in percentage points, paired "
             "over the seeds both trained; its 95% interval, its p and its p adjusted by Holm's "
             "method over every comparison of the claims together. Supported: better than "
             "every alternative after adjustment; partly supported: better than some, not "
             "distinguishable from the rest; contradicted: some alternative is better; "
             "inconclusive: the seeds cannot tell. The final-accuracy claim compares our "
             "measurement with the claimed number."]  # fmt: skip
    notes += [f"Tests: {' '.join(tests)}"] if tests else []
    return Table("claims", "The paper's conclusions",
                 ("", "claim", "verdict", "versus", "difference (pp)", "95% interval (pp)",
                  "p", "p (Holm)"), tuple(rows), tuple(notes), data=tuple(data))  # fmt: skip


def cells_table(data) -> Table:
    """Every published number against our seeds: the mean's interval and one run's."""
    if not isinstance(data, dict):
        data = data.to_dict()
    rows, raw, marked = [], [], []
    with_pi = any("prediction95" in c for c in data.get("cells", []))
    for i, d in enumerate(data.get("cells", [])):
        verdict = cell_verdict(d)
        interval = (f"{_p(d['mean'])} [{_p(d['ci95'][0])}, {_p(d['ci95'][1])}]"
                    if d.get("mean") is not None else "–")  # fmt: skip
        sd = d.get("sd")
        seeds = " ".join(_p1(a) for a in d.get("accuracies", []))
        row = [f"{d['table']}", str(d["row"]), _config_text_dict(d.get("config", {})),
               f"{d['published']:.1f}", interval,
               _p(sd) if sd is not None else "–"]  # fmt: skip
        if with_pi:
            low, high = _pair(d.get("prediction95"))
            row.append(f"[{_p(low)}, {_p(high)}]")
        row += [
            seeds,
            verdict or "no interval",
            "; ".join(f.split(" (")[0] for f in d.get("flags", [])),
        ]
        rows.append(tuple(row))
        marked += [i] if verdict and verdict != "consistent" else []
        raw.append(d)
    columns = [
        "table",
        "row",
        "configuration",
        "paper (%)",
        "ours: mean [95% t-interval] (%)",
        "sd (%)",
    ]
    columns += ["one run: 95% prediction interval (%)"] if with_pi else []
    columns += ["our seeds (%)", "verdict", "flags"]
    yardstick = ("where one run of ours would land (the prediction interval)" if with_pi
                 else "our interval")  # fmt: skip
    return Table(
        "replication-cells", "Every published number against ours", tuple(columns), tuple(rows),
        (f"The verdict places the paper's number, a single run, against {yardstick}: "
         "consistent (inside), above or below it; diverged where a seed diverged or stayed at "
         "chance (an average of such seeds estimates nothing). Consistent means one run of ours "
         "could plausibly give that number, not that it is confirmed. Highlighted rows are not "
         "consistent. A seed that diverged counts with its best epoch before that, or not at "
         "all if it had none.",),
        tuple(marked), tuple(raw),
    )  # fmt: skip


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


def _pair(values) -> tuple:
    return tuple(values) if values and len(values) == 2 else (None, None)


def _pv(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _p1(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def _config_text_dict(config: dict) -> str:
    from hpstudy.config.config import Config

    try:
        return _config_text(Config.from_dict({**config, "seed": config.get("seed", 0)}))
    except Exception:  # a file from another version: its labels as written
        return ", ".join(
            str(config.get(k, "")) for k in ("topology", "optimizer", "lr", "activation")
        )


def _p(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"
