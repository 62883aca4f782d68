"""`hpstudy report` on real runs of small slices: every number checked against the raw store.

The runs are made once per session (`report_runs`): the paper study itself (studies/paper.toml,
quick limits), and a clean staged run and a grid run over one small space, all in one parent
folder so that each report finds the others. The checks recompute the numbers from Optuna's
trials directly (`optuna.load_study`, the `result` user attribute), not through hpstudy's
protocols, and compare them with what report.html prints.
"""

from __future__ import annotations

import html.parser
import json
import re
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from scipy import stats

from hpstudy.cli import main
from hpstudy.config.choices import TOPOLOGIES
from hpstudy.config.factors import PAPER_FACTORS as FACTORS
from hpstudy.config.factors import factor_label
from hpstudy.config.studyfile import load_study
from hpstudy.errors import UserError
from hpstudy.report import build_report
from hpstudy.runner.execute import run_study
from hpstudy.runner.options import RunOptions

QUICK = {"limit_train": 320, "limit_eval": 250}
SMALL_SPACE = """
schema_version = 1
name = "{name}"
protocol = "{protocol}"
selection = "validation"
n_seeds = {n_seeds}
max_epochs = 2
[normalization]
mean = 0.5
std = 0.5
[validation]
size = 250
seed = 0
[space]
topology = ["T1", "T2"]
optimizer = ["sgd", "adam"]
lr = [0.01, 0.05]
activation = ["relu", "tanh"]
"""
STAGES = """
[start]
optimizer = "sgd"
lr = 0.01
activation = "relu"
[[stages]]
factor = "topology"
[[stages]]
factor = "optimizer"
[[stages]]
factor = "lr"
[[stages]]
factor = "activation"
"""


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory) -> dict[str, Path]:
    """runs/{paper,clean,grid} trained on small slices, each with its report written."""
    root = tmp_path_factory.mktemp("report")
    runs = root / "runs"
    studies = {"paper": load_study("paper").with_overrides(max_epochs=2)}
    for name, protocol, n_seeds in (("clean", "staged", 2), ("grid", "grid", 1)):
        text = SMALL_SPACE.format(name=name, protocol=protocol, n_seeds=n_seeds)
        path = root / f"{name}.toml"
        path.write_text(text + (STAGES if protocol == "staged" else ""), encoding="utf-8")
        studies[name] = load_study(path)
    for name, study in studies.items():
        run_study(study, RunOptions(out=str(runs / name), **QUICK))
    assert main(["report", str(runs / "paper")]) == 0  # the CLI, in-process
    for name in ("clean", "grid"):
        build_report(runs / name)
    return {name: runs / name for name in studies}


class _Tables(html.parser.HTMLParser):
    """{table id: [(row cells, marked?)]} with the header row first."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[list[str], bool]]] = {}
        self.current = self.row = self.cell = None
        self.marked = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.current = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self.current is not None:
            self.row, self.marked = [], attrs.get("class") == "marked"
        elif tag in ("td", "th") and self.row is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append(self.cell)
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.current.append((self.row, self.marked))
            self.row = None
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def html_tables(run_dir: Path) -> dict[str, list[dict]]:
    """Each table of report.html as a list of {column: cell, '_marked': bool}."""
    parser = _Tables()
    parser.feed((run_dir / "report.html").read_text(encoding="utf-8"))
    out = {}
    for key, rows in parser.tables.items():
        header = rows[0][0]
        out[key] = [dict(zip(header, cells, strict=True), _marked=m) for cells, m in rows[1:]]
    return out


def raw_trials(run_dir: Path) -> tuple[list[dict], dict]:
    """Finished trials straight from the SQLite file: factors, seed, best accuracy, key."""
    study = optuna.load_study(study_name=run_dir.name, storage=f"sqlite:///{run_dir}/study.db")
    trials = []
    for t in study.get_trials(deepcopy=False):
        result = t.user_attrs.get("result")
        if result is None or t.state != optuna.trial.TrialState.COMPLETE:
            continue
        config = t.user_attrs["config"]
        accs = [a for a in result["eval_accuracy"] if a is not None]
        trials.append({
            "factors": (tuple(config["topology"]), config["optimizer"], config["lr"],
                        config["activation"]),
            "seed": config["seed"], "best": max(accs), "key": t.user_attrs["key"],
        })  # fmt: skip
    return trials, study.user_attrs


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def ci_text(values: list[float]) -> str:
    """'mean ± half-width (n=k)' of the 95% t-interval, computed with scipy directly."""
    if len(values) == 1:
        return pct(values[0])
    mean, sem = float(np.mean(values)), float(stats.sem(values))
    half = 0.0  # equal values: scipy's interval is nan for a zero scale, the width is 0
    if sem > 0:
        low, _ = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
        half = mean - low
    return f"{pct(mean)} ± {pct(half)} (n={len(values)})"


def label(factors: tuple) -> str:
    return " ".join(factor_label(f, v) for f, v in zip(FACTORS, factors, strict=True))


def staged_path(study, trials: list[dict]):
    """Replay the staged protocol on raw trials: yield (stage, [(value, accs, factors)], winner)."""
    base = dict(study.start)
    for stage in study.stages:
        rows = []
        for value in stage.values:
            f = {**base, stage.factor: value}
            want = (tuple(f["topology"]), f["optimizer"], f["lr"], f["activation"])
            accs = [t["best"] for t in sorted(trials, key=lambda t: t["seed"])
                    if t["factors"] == want]  # fmt: skip
            rows.append((value, accs, want))
        winner = max(range(len(rows)), key=lambda i: (np.mean(rows[i][1]), -i))
        yield stage, rows, winner
        base[stage.factor] = stage.values[winner]


def test_paper_tables_equal_the_store(report_runs):
    run = report_runs["paper"]
    trials, _ = raw_trials(run)
    tables = html_tables(run)
    study = load_study("paper")
    for index, (stage, rows, winner) in enumerate(staged_path(study, trials), 1):
        key = f"table-{index}-{stage.name}"
        shown = tables[key]
        assert len(shown) == len(rows), key
        for i, ((_, accs, _), cells, paper) in enumerate(
            zip(rows, shown, stage.published, strict=True)
        ):
            assert len(accs) == 1
            # one seed: the test set's own noise, Wilson's interval on its 250 images
            n = QUICK["limit_eval"]
            ci = stats.binomtest(round(accs[0] * n), n).proportion_ci(0.95, method="wilson")
            low, high = 100 * ci.low, 100 * ci.high
            want_text = f"{pct(accs[0])} [{low:.2f}, {high:.2f}] Wilson"
            assert cells["test acc (%)"] == want_text, (key, i)
            assert cells["paper (%)"] == f"{paper:.1f}"
            assert cells["difference (pp)"].split()[0] == f"{100 * accs[0] - paper:+.2f}"
            place = "yes (Wilson)" if low <= paper <= high else "no: paper higher (Wilson)"
            assert cells["paper in our 95% CI"] in (place, "other configuration")
            assert cells[""] == ("★" if i == winner else "") and cells["_marked"] == (i == winner)
    layers = [row["Layers"] for row in tables["table-1-topology"]]
    assert layers == [str([784, *TOPOLOGIES[f"T{i}"], 10]) for i in range(1, 6)]


def test_clean_tables_show_mean_and_t_interval_over_seeds(report_runs):
    run = report_runs["clean"]
    trials, attrs = raw_trials(run)
    tables = html_tables(run)
    study = load_study(run.parent.parent / "clean.toml")
    paper = load_study("paper")  # a clean study borrows the paper's published numbers
    for index, (stage, rows, winner) in enumerate(staged_path(study, trials), 1):
        key = f"table-{index}-{stage.name}"
        published = next(s for s in paper.stages if s.factor == stage.factor)
        for i, ((value, accs, want), cells) in enumerate(zip(rows, tables[key], strict=True)):
            assert len(accs) == 2
            assert cells["validation acc (%)"] == ci_text(accs)
            assert cells["paper (%)"] == f"{published.published[published.values.index(value)]:.1f}"
            if i == winner:  # test accuracy measured once per seed, for winners only
                keys = [t["key"] for t in sorted(trials, key=lambda t: t["seed"])
                        if t["factors"] == want]  # fmt: skip
                tests = [attrs[f"test_accuracy:{k}"] for k in keys]
                assert cells["test acc (%)"] == ci_text(tests)
            else:
                assert cells["test acc (%)"] == "–"


def test_final_model_section(report_runs):
    from hpstudy.predict.modelfile import load_model

    run = report_runs["paper"]
    stored = load_model(run / "final_best_model.pth").metadata["metrics"]["test_accuracy"]
    data = json.loads((run / "report.json").read_text())["tables"]
    (final,) = data["final-model"]["data"]
    # The paper protocol's model is its best-epoch weights on the test split, so evaluating it
    # again must give the stored accuracy (to one image, for float32 near-ties).
    assert abs(final["accuracy"] - stored) <= 1 / QUICK["limit_eval"] + 1e-12
    per_class = data["per-class"]["data"]
    assert sum(c["support"] for c in per_class) == QUICK["limit_eval"]
    recall = sum(c["recall"] * c["support"] for c in per_class) / QUICK["limit_eval"]
    assert recall == pytest.approx(final["accuracy"])
    pairs = data["confused-pairs"]["data"]
    totals = [p["a_as_b"] + p["b_as_a"] for p in pairs]
    assert totals == sorted(totals, reverse=True) and len(pairs) <= 5
    assert sum(totals) <= round((1 - final["accuracy"]) * QUICK["limit_eval"])
    for name in ("confusion_matrix", "misclassified", "curves"):
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000
    # The stratified slices hold as many images of every class: a flat chart shows nothing,
    # so one sentence says it instead.
    assert not (run / "figures" / "class_distribution.png").exists()
    per_train, per_test = QUICK["limit_train"] // 10, QUICK["limit_eval"] // 10
    assert (f"Classes are balanced: {per_train} training and {per_test} test images"
            in (run / "report.md").read_text())  # fmt: skip


def test_grid_sections_equal_the_store(report_runs):
    grid, clean = report_runs["grid"], report_runs["clean"]
    trials, _ = raw_trials(grid)
    tables = html_tables(grid)
    accs = {t["factors"]: t["best"] for t in trials}
    assert len(accs) == 16
    # main effects: the mean over the configurations at each level, with its t-interval
    titles = ["Topology", "Optimizer", "Learning rate", "Activation"]
    for row in tables["main-effects"]:
        i = titles.index(row["factor"])
        level = [a for f, a in accs.items() if factor_label(FACTORS[i], f[i]) == row["level"]]
        assert len(level) == 8
        assert row["mean acc (%) ± 95% CI (n configurations)"] == ci_text(level)
    ranked = sorted(accs.values(), reverse=True)
    assert [r["validation acc (%)"] for r in tables["best-grid"]] == [pct(a) for a in ranked[:10]]
    # fANOVA (or its named fallback) over the four varied factors sums to one
    importances = [float(r["importance"]) for r in tables["importances"]]
    assert len(importances) == 4 and sum(importances) == pytest.approx(1, abs=0.01)
    # the clean staged winner's rank among the grid's 16 configurations
    (rank,) = [r for r in tables["staged-vs-grid"] if r["staged run"] == "clean"]
    study = load_study(clean.parent.parent / "clean.toml")
    *_, (_, rows, winner) = staged_path(study, raw_trials(clean)[0])
    mine = accs[rows[winner][2]]
    assert rank["its final configuration"] == label(rows[winner][2])
    assert rank["rank in the grid"] == f"{1 + sum(a > mine for a in ranked)} of 16"
    assert rank["its grid acc (%)"] == pct(mine)
    assert rank["it minus the best (pp)"] == f"{100 * (mine - ranked[0]):+.2f} (one seed)"
    for name in ("main_effects", "optimizer_lr", "importances", "curves"):
        assert (grid / "figures" / f"{name}.png").stat().st_size > 1000


def test_leakage_gap_pairs_the_same_configurations(report_runs):
    paper, clean = report_runs["paper"], report_runs["clean"]
    leaky, _ = raw_trials(paper)
    honest, attrs = raw_trials(clean)
    rows = html_tables(paper)["leakage-gap-clean"]
    both = {t["factors"] for t in leaky} & {t["factors"] for t in honest}
    assert len(rows) == len(both) >= 2  # at least stage 1's T1 and T2 with SGD 0.01 ReLU
    for row in rows:
        (factors,) = [f for f in both if label(f) == row["configuration"]]
        mine = [t["best"] for t in leaky if t["factors"] == factors]
        theirs = sorted((t for t in honest if t["factors"] == factors), key=lambda t: t["seed"])
        assert row["paper: test acc (%), epoch chosen on test"] == ci_text(mine)
        assert row["clean: validation acc (%)"] == ci_text([t["best"] for t in theirs])
        tests = [attrs[f"test_accuracy:{t['key']}"] for t in theirs
                 if f"test_accuracy:{t['key']}" in attrs]  # fmt: skip
        assert row["clean: test acc (%), measured once"] == (ci_text(tests) if tests else "–")


def test_siblings_without_a_comparison_are_left_out(report_runs):
    """A second grid beside the first has nothing to compare with it (neither staged nor on the
    other side of the leak), so its report names only the staged runs; the others keep all."""
    from hpstudy.report import find_related, load_run

    runs = report_runs["grid"].parent
    twin = runs / "grid-twin"
    shutil.copytree(report_runs["grid"], twin)

    def names(run: Path) -> list[str]:
        return sorted(r.run_dir.name for r in find_related(load_run(run)))

    try:
        assert names(twin) == ["clean", "paper"]
        assert names(report_runs["paper"]) == ["clean", "grid", "grid-twin"]
        assert names(report_runs["clean"]) == ["grid", "grid-twin", "paper"]
    finally:
        shutil.rmtree(twin)


def test_siblings_on_other_data_or_budget_are_not_compared(report_runs):
    """A clean run is the leak's other side, but not on other data or with another budget."""
    from hpstudy.report import find_related, load_run

    runs = report_runs["paper"].parent
    changes = {
        "clean-digits": lambda info: info["data"].update(name="digits"),
        "clean-longer": lambda info: info["overrides"].update(max_epochs=3),
        "clean-more-data": lambda info: info["options"].update(limit_train=640),
    }
    try:
        for name, change in changes.items():
            twin = runs / name
            shutil.copytree(report_runs["clean"], twin)
            info = json.loads((twin / "run.json").read_text(encoding="utf-8"))
            change(info)
            (twin / "run.json").write_text(json.dumps(info), encoding="utf-8")
        found = sorted(r.run_dir.name for r in find_related(load_run(report_runs["paper"])))
        assert found == ["clean", "grid"]
    finally:
        for name in changes:
            shutil.rmtree(runs / name, ignore_errors=True)


def test_no_compare_leaves_siblings_out(report_runs, tmp_path, capsys):
    twin = report_runs["paper"].parent / "paper-alone"
    shutil.copytree(report_runs["paper"], twin)
    try:
        assert main(["report", str(twin), "--no-compare"]) == 0
        report = json.loads((twin / "report.json").read_text(encoding="utf-8"))
        assert report["related"] == []
        assert not any(key.startswith("leakage-gap") for key in report["tables"])
        assert "staged-vs-grid" not in report["tables"]
        page = (twin / "report.html").read_text(encoding="utf-8")
        assert ">Comparisons<" not in page  # no empty section says there is nothing
        capsys.readouterr()
        assert main(["report", str(twin), "--no-compare", "--compare", str(twin)]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--no-compare" in err[0], err
    finally:
        shutil.rmtree(twin)


@pytest.mark.slow
def test_a_study_on_other_data_names_no_paper(tmp_path):
    """scikit-learn's digits: the report's title is the study's, and the paper, its numbers and
    its figure are nowhere on the page."""
    study = load_study("digits").with_overrides(max_epochs=1, n_seeds=1)
    run_study(study, RunOptions(out=str(tmp_path / "digits")))
    build_report(tmp_path / "digits")
    page = (tmp_path / "digits" / "report.html").read_text(encoding="utf-8")
    assert "<h1" in page and "<title>Study digits: " in page
    for phrase in ("Hyperparameter Tuning", "Konycheva", "paper's final", "Fig. 1", "89.5"):
        assert phrase not in page, phrase


def test_report_files_are_self_contained(report_runs):
    for run in report_runs.values():
        page = (run / "report.html").read_text(encoding="utf-8")
        sources = re.findall(r'<img src="([^"]+)"', page)
        assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
        assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from outside
        markdown = (run / "report.md").read_text(encoding="utf-8")
        linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
        assert len(linked) == len(sources)
        assert all(p.startswith("figures/") and (run / p).is_file() for p in linked)
        assert not list(run.rglob("*.part")), "a temporary file was left behind"
    provenance = {r[""]: r["value"] for r in html_tables(report_runs["paper"])["provenance"]}
    assert "(canonical)" in provenance["sha256 t10k-images-idx3-ubyte"]
    reproduce = {r[""]: r["value"] for r in html_tables(report_runs["paper"])["reproduce"]}
    assert reproduce["report command"] == f"hpstudy report {report_runs['paper']}"
    assert "command" not in provenance  # said once, in the reproduce block
    assert provenance["seeds"] == "42" and "torch" in provenance["versions"]


def test_missing_or_empty_run_folder_is_a_user_error(tmp_path, capsys):
    with pytest.raises(UserError, match="does not exist"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not an hpstudy run folder"):
        build_report(tmp_path / "empty")
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpstudy report: error:") and "\n" not in err
    assert not (tmp_path / "empty" / "report.html").exists()


def test_importances_name_their_method_without_scikit_learn(report_runs, monkeypatch):
    """fANOVA needs scikit-learn; without it the report says so and names PED-ANOVA instead."""
    import optuna.importance

    from hpstudy.report import load_run, metrics

    def missing(**kwargs):
        raise ImportError("No module named 'sklearn'")

    monkeypatch.setattr(optuna.importance, "FanovaImportanceEvaluator", missing)
    found = metrics.importances(load_run(report_runs["grid"]))
    assert found.method == "PED-ANOVA" and "scikit-learn" in found.reason
    assert set(found.values) <= set(FACTORS)


@pytest.mark.slow  # a tiny two-seed grid (16 trials, a few seconds)
def test_a_configurations_gap_to_the_grids_best_is_paired_over_seeds(tmp_path):
    """rank_in's gap: the configuration minus the grid's best, seed by seed (scipy's paired
    t-test and the t-interval over the pairs); a diverged seed leaves both sides."""
    import dataclasses
    import math

    from hpstudy.engine.results import Outcome
    from hpstudy.report import metrics
    from hpstudy.storage.rundir import load_trials
    from tiny_studies import write_study

    study = load_study(write_study(tmp_path, name="grid", protocol="grid", n_seeds=2))
    summary = run_study(study, RunOptions(out=str(tmp_path / "grid"), **QUICK, threads=1))
    (table,) = summary.tables
    records = [r for r in load_trials(summary.run_dir) if r.status.is_finished]
    best, last = table.rows[0], table.rows[-1]

    def accs(row):
        return {r.seed: r.best_accuracy for r in records if r.number in row.trial_numbers}

    rank = metrics.rank_in(table, last.config, records)
    mine, top = accs(last), accs(best)
    diffs = [100 * (mine[s] - top[s]) for s in (42, 43)]
    assert rank.rank == len(table.rows) == 8 and rank.gap.n == 2
    assert rank.gap.estimate == pytest.approx(sum(diffs) / 2)
    assert rank.gap.p_value == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue)
    half = stats.t.ppf(0.975, 1) * stats.sem(diffs)
    assert [rank.gap.low, rank.gap.high] == pytest.approx([sum(diffs) / 2 - half,
                                                           sum(diffs) / 2 + half])  # fmt: skip
    assert metrics.rank_in(table, best.config, records).gap.estimate == 0.0
    # seed 43 of the best diverged (constructed): the pair of seed 43 leaves, one seed is left
    diverged = [dataclasses.replace(r, outcome=Outcome.DIVERGED)
                if r.number in best.trial_numbers and r.seed == 43 else r
                for r in records]  # fmt: skip
    gap = metrics.rank_in(table, last.config, diverged).gap
    assert gap.n == 1 and gap.estimate == pytest.approx(diffs[0]) and math.isnan(gap.low)
