"""Unit tests of the report's parts and the engine's planning, on constructed inputs (fast tier)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm

from hpstudy.config.config import Config
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
    assert "<caption>Scores &lt;b&gt;</caption>" in page and "<td>1 &lt; 2</td>" in page
    assert '<tr class="marked"><td>3</td>' in page and "<details><summary>" in page
    assert "<b>" not in page


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
