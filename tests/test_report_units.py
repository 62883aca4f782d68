"""Unit tests of the report's parts and the engine's planning, on constructed inputs (fast tier)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm

from hpstudy.config.config import Config
from hpstudy.config.cost import n_parameters
from hpstudy.engine.planning import bytes_per_member, max_members, split_group
from hpstudy.report import metrics
from hpstudy.report.render import Code, Heading, Text, to_html, to_markdown
from hpstudy.report.report_tables import Table, cell_text, diff_text, verdict
from hpstudy.stats.tables import Cell, mean_ci


def test_confusion_matrix_and_per_class_scores_match_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 2_000)
    predictions = np.where(rng.random(2_000) < 0.8, labels, rng.integers(0, 10, 2_000))
    predictions[predictions == 9] = 8  # class 9 is never predicted: its precision is undefined
    cm = metrics.confusion_matrix(labels, predictions)
    assert (cm == skm.confusion_matrix(labels, predictions, labels=range(10))).all()
    scores = metrics.per_class(cm)
    p, r, f, support = skm.precision_recall_fscore_support(
        labels, predictions, labels=range(10), zero_division=0
    )
    for s in scores[:9]:
        assert s.precision == pytest.approx(p[s.index]) and s.recall == pytest.approx(r[s.index])
        assert s.f1 == pytest.approx(f[s.index]) and s.support == support[s.index]
    assert math.isnan(scores[9].precision) and scores[9].recall == 0.0


def test_confused_pairs_sum_both_directions_and_sort_by_total():
    cm = np.zeros((4, 4), dtype=np.int64)
    cm[0, 1], cm[1, 0] = 5, 7  # 12 in all
    cm[2, 3] = 13
    cm[3, 1] = 1
    pairs = metrics.confused_pairs(cm, k=2)
    assert [(p.a, p.b, p.total) for p in pairs] == [(2, 3, 13), (0, 1, 12)]
    assert (pairs[1].a_as_b, pairs[1].b_as_a) == (5, 7)


def test_cells_print_their_interval_and_one_seed_gets_wilsons():
    cell = mean_ci([0.881, 0.884, 0.879])
    assert cell_text(cell) == f"{100 * cell.mean:.2f} ± {100 * cell.half95:.2f} (n=3)"
    one = Cell(0.8812, math.nan, 1, (0.8812,))
    assert cell_text(one) == "88.12"
    ci = stats.binomtest(8812, 10_000).proportion_ci(0.95, method="wilson")
    assert cell_text(one, 10_000) == f"88.12 [{100 * ci.low:.2f}, {100 * ci.high:.2f}] Wilson"
    assert cell_text(None) == "–" and cell_text(mean_ci([])) == "–"
    assert diff_text(one, 89.5) == "-1.38" and diff_text(one, None) == ""


def test_verdict_places_the_papers_number_against_our_interval():
    cell = mean_ci([0.880, 0.884, 0.879, 0.886, 0.881])
    assert verdict(cell, 88.2) == "yes"
    assert verdict(cell, 89.5) == "no: paper higher" and verdict(cell, 86.0) == "no: paper lower"
    one = Cell(0.8812, math.nan, 1, (0.8812,))
    assert verdict(one, 89.5) == "n=1: no interval"
    assert verdict(one, 89.5, 10_000) == "no: paper higher (Wilson)"
    assert verdict(one, 88.5, 10_000) == "yes (Wilson)"


def test_html_escapes_text_marks_rows_and_builds_contents():
    table = Table("t-1", "Scores <b>", ("a", "b"), (("1 < 2", "x"), ("3", "y")), ("note `c`",),
                  marked=(1,))  # fmt: skip
    blocks = [Heading(1, "Title"), Text("see `code` & <tags>", "warning"), Heading(2, "Part A"),
              table, Code("x <= 1", "the file")]  # fmt: skip
    page = to_html(blocks, title="T & T")
    assert "<title>T &amp; T</title>" in page
    assert '<p class="warning">see <code>code</code> &amp; &lt;tags&gt;</p>' in page
    assert '<li><a href="#part-a">Part A</a></li>' in page  # the contents list level-2 headings
    assert "<caption>Scores &lt;b&gt;</caption>" in page
    assert '<td data-label="a">1 &lt; 2</td>' in page  # a narrow screen labels stacked cells
    assert '<tr class="marked"><td data-label="a">3</td>' in page and "<details><summary>" in page
    assert "<b>" not in page


def test_html_turns_emphasis_into_em_and_lets_only_long_tokens_break():
    digest = "a" * 64
    table = Table("t", "T", ("k", "v"), (("sha256", f"{digest} (canonical)"),))
    page = to_html([Text("The paper: *A Title*, 2 * 3 = 6. [seeds](seeds.csv) "
                         "[x](javascript:alert(1))"), table], title="x")  # fmt: skip
    assert '<a href="seeds.csv">seeds</a>' in page and "javascript:alert(1)" in page
    assert 'href="javascript' not in page
    assert "<em>A Title</em>" in page and "2 * 3 = 6" in page and "*A Title*" not in page
    assert f'<span class="long">{digest}</span> (canonical)' in page


def test_markdown_escapes_pipes_and_bolds_marked_rows(tmp_path):
    table = Table("t", "T", ("a|b", "c"), (("1|2", "3"), ("4", "5")), marked=(1,))
    md = to_markdown([Heading(2, "H"), table, Text("careful", "warning")], relative_to=tmp_path)
    assert "| a\\|b | c |" in md and "| 1\\|2 | 3 |" in md and "| **4** | **5** |" in md
    assert "## H" in md and "> **Warning:** careful" in md


def test_planning_splits_evenly_and_sizes_from_memory():
    assert split_group(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert split_group(list(range(6)), 6) == [list(range(6))]
    assert [len(c) for c in split_group(list(range(375)), 100)] == [94, 94, 94, 93]
    t4, t5 = Config(topology="T4"), Config(topology="T5")
    assert bytes_per_member(t5, torch.float32) > 4 * bytes_per_member(t4, torch.float32)
    per_image = 10_000 * (4 + 2)  # loss and two correctness masks per evaluation image
    assert bytes_per_member(t4, torch.float32, 0) + per_image == bytes_per_member(t4, torch.float32)
    assert bytes_per_member(t4, torch.float64, 0) == 2 * bytes_per_member(t4, torch.float32, 0)
    # the fused step's two scratch buffers: two more copies of the parameters at most
    fused = bytes_per_member(t4, torch.float32, optimizer_step="fused")
    assert fused - bytes_per_member(t4, torch.float32) == 2 * 4 * n_parameters(t4)
    cpu = torch.device("cpu")
    assert (
        max_members(t4, device=cpu, dtype=torch.float32)
        >= max_members(t5, device=cpu, dtype=torch.float32)
        >= 1
    )


def test_a_printed_table_says_which_trials_the_pruner_stopped():
    from hpstudy.stats.tables import Row, StageTable, format_table

    def row(label, accuracy, epochs, outcomes):
        cell = Cell(accuracy, math.nan, 1, (accuracy,))
        return Row(label, {}, (42,) * len(epochs), cell, best_epochs=epochs, outcomes=outcomes)

    rows = (row("A", 0.93, (14,), ("complete",)), row("B", 0.90, (2,), ("pruned",)),
            row("C", 0.91, (12, 3), ("complete", "diverged")))  # fmt: skip
    text = format_table(StageTable("s", "search", 1, "search", "Search", "", "validation",
                                   "rule", rows))  # fmt: skip
    lines = text.splitlines()
    assert lines[2].endswith(" 14") and lines[3].endswith(" 2 pruned")
    assert lines[4].endswith(" 12,3 diverged")


def test_the_git_commit_says_when_the_code_that_ran_was_not_that_commit(tmp_path):
    import subprocess

    from hpstudy.storage.rundir import git_commit

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout.strip()  # fmt: skip

    assert git_commit(tmp_path) == ""  # not a checkout
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "a")
    head = git("rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "notes.txt").write_text("untracked files are not the code that ran\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{head} with uncommitted changes"


def _contract() -> dict:
    """A replication.json in the verdict's contract: three configurations, four numbers."""

    def cell(table, row, config, published, accuracies, pi, verdict, config_id):
        mean = sum(accuracies) / len(accuracies)
        return {"table": table, "row": row, "config": config, "published": published,
                "mean": mean, "ci95": [mean - 0.5, mean + 0.5], "n": len(accuracies),
                "seeds": [42, 43, 44], "accuracies": accuracies, "sd": 0.4, "min": min(accuracies),
                "max": max(accuracies), "prediction95": pi, "verdict": verdict, "flags": [],
                "config_id": config_id}  # fmt: skip

    t4 = {"topology": [256, 128, 64], "optimizer": "sgd", "lr": 0.01, "activation": "relu"}
    t1 = t4 | {"topology": [128]}
    adam = t4 | {"optimizer": "adam", "lr": 0.1}
    return {
        "n_seeds": 3,
        "headline": "Adam is not better than SGD (-1.8 pp); 89.5% is not reached.",
        "cells": [
            cell("I", "T1", t1, 85.2, [85.0, 85.5, 85.3], [84.2, 86.3], "consistent", "a"),
            cell("I", "T4", t4, 89.0, [87.0, 87.4, 87.2], [86.2, 88.3], "above", "b"),
            cell("II", "SGD", t4, 88.0, [87.0, 87.4, 87.2], [86.2, 88.3], "consistent", "b"),
            cell("II", "Adam", adam, 80.0, [10.0, 10.0, 38.0], [None, None], "diverged", "c"),
        ],
        "claims": [
            {"id": "I", "text": "T4 is the best topology", "verdict": "partly supported",
             "comparisons": [{"alternative": "T1", "estimate": 1.9, "ci95": [1.2, 2.6],
                              "p": 0.004, "p_holm": 0.012}]},
            {"id": "II", "text": "Adam is the best optimizer", "verdict": "contradicted",
             "comparisons": [{"alternative": "SGD", "estimate": -67.0, "ci95": [-99.0, -30.0],
                              "p": 0.01, "p_holm": 0.02}]},
        ],
        "notes": [],
    }  # fmt: skip


def test_the_opening_reads_the_verdicts_contract(tmp_path):
    from hpstudy.report import answer, opening

    data = _contract()
    assert answer.headline_text(data) == data["headline"]
    counts = answer.counts_text(data)
    assert "Of the paper's 4 published numbers (3 configurations, 3 seeds each)" in counts
    assert "prediction interval for one run: 2 consistent, 1 above, 0 below, 1 diverged" in counts
    assert "1 partly supported, 1 contradicted, 0 inconclusive" in counts
    cells = opening.cells_table(data)
    assert "one run: 95% prediction interval (%)" in cells.columns
    assert [r[cells.columns.index("verdict")] for r in cells.rows] == [
        "consistent", "above", "consistent", "diverged"]  # fmt: skip
    assert cells.marked == (1, 3)  # the rows that are not consistent
    claims = opening.claims_table(data["claims"])
    assert [r[3] for r in claims.rows] == ["T1", "SGD"]  # one row per comparison
    assert [r[-1] for r in claims.rows] == ["0.012", "0.02"]  # Holm-adjusted p
    rows = answer.forest_rows(data)  # T4 in Tables I and II is one configuration, two numbers
    assert [r["label"] for r in rows] == ["T1", "T4 (= II SGD)", "Adam"]
    assert rows[1]["papers"] == [(89.0, "above"), (88.0, "consistent")]
    assert rows[2]["diverged"] and not rows[0]["diverged"]


def test_forest_plot_draws_each_verdict_in_its_colour(tmp_path):
    from matplotlib.colors import to_rgb
    from PIL import Image

    from hpstudy.report import answer, figures

    data = _contract()
    path = figures.plot_forest(answer.forest_rows(data), answer.forest_comparisons(data),
                               tmp_path / "forest.png")  # fmt: skip
    with Image.open(path) as image:
        colours = {c for _, c in image.convert("RGB").getcolors(maxcolors=1 << 20)}
        width = image.width
    assert width == 2 * 11 * figures.DPI  # drawn at 2x, shown at 1x: 1,100 px wide
    for name in ("consistent", "above", "below", "diverged"):  # "below": in the legend
        rgb = tuple(round(255 * x) for x in to_rgb(figures.VERDICT_COLOURS[name]))
        assert rgb in colours, name
