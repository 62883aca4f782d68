"""The replication protocol end to end on small slices of the real data: the paper's cells over
seeds, shared trials, replication.json from the store, and a report that leads with the verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hpstudy.config.studyfile import load_study, parse_study
from hpstudy.errors import UserError
from hpstudy.predict.modelfile import load_model
from hpstudy.report import build_report
from hpstudy.runner.execute import run_study
from hpstudy.runner.options import RunOptions
from hpstudy.stats import verdict as v
from hpstudy.storage import TrialStatus, trial_key
from hpstudy.storage.rundir import MODEL_FILE, REPLICATION_FILE, open_run
from hpstudy.tabulate import judge_run
from hpstudy.tabulate.cells import HELD_OUT_ARM, config_id, paper_cells
from hpstudy.tabulate.plans import replicate_groups
from tiny_studies import HEADER, REPLICATE

QUICK = {"limit_train": 320, "limit_eval": 250}


def tiny_replicate(folder: Path, n_seeds: int = 2) -> Path:
    text = HEADER.format(name="rep", protocol="replicate", selection="test", n_seeds=n_seeds,
                         max_epochs=2) + REPLICATE  # fmt: skip
    path = folder / "rep.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_cells_follow_the_papers_own_path():
    cells = paper_cells(load_study("replicate"))
    assert len(cells) == 18
    by_table = {(c.table, c.row): c.factors for c in cells}
    assert by_table["I", "T4"] == {"topology": (256, 128, 64), "optimizer": "sgd", "lr": 0.01,
                                   "activation": "relu"}  # fmt: skip
    assert by_table["II", "RMSprop"]["topology"] == (256, 128, 64)
    assert by_table["III", "0.1"] | {} == {"topology": (256, 128, 64), "optimizer": "adam",
                                           "lr": 0.1, "activation": "relu"}  # fmt: skip
    assert by_table["IV", "ELU"] == {"topology": (256, 128, 64), "optimizer": "adam",
                                     "lr": 0.005, "activation": "elu"}  # fmt: skip
    # T4/SGD/0.01/ReLU (Tables I and II) and two more configurations appear twice: 15 distinct
    assert len(replicate_groups(load_study("replicate"))) == 15


def test_a_replicate_study_needs_published_numbers_and_the_test_metric(tmp_path: Path):
    text = tiny_replicate(tmp_path).read_text()
    with pytest.raises(UserError, match=r"stages\[1\]\.published"):
        parse_study(text.replace("published = [89.0, 89.5]\n", ""), tmp_path / "x.toml")
    with pytest.raises(UserError, match="selection = 'test'"):
        parse_study(text.replace('selection = "test"', 'selection = "validation"'), "x.toml")
    with pytest.raises(UserError, match=r"replicate\.staged_seeds"):
        parse_study(text.replace("staged_seeds = 1", "staged_seeds = -1"), "x.toml")
    # the recommendation's equivalence margin (points): 0.5 unless the file says otherwise
    assert parse_study(text, "x.toml").equivalence_margin == 0.5
    wide = text.replace("staged_seeds = 1", "staged_seeds = 1\nequivalence_margin = 1.5")
    assert parse_study(wide, "x.toml").equivalence_margin == 1.5
    for bad in ("0", "-0.5", '"half"', "nan"):
        with pytest.raises(UserError, match=r"replicate\.equivalence_margin: must be a positive"):
            parse_study(wide.replace("= 1.5", f"= {bad}"), "x.toml")


@pytest.fixture(scope="module")
def replicated_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("replicate")
    study = load_study(tiny_replicate(folder)).with_overrides(with_clean=True)
    summary = run_study(study, RunOptions(out=str(folder / "run"), **QUICK))
    build_report(summary.run_dir, command="hpstudy run rep.toml")
    return summary


@pytest.fixture(scope="module")
def replicated(replicated_run) -> Path:
    return replicated_run.run_dir


def test_each_configuration_is_one_trial_per_seed_shared_with_the_staged_search(replicated):
    records = open_run(replicated).records()
    finished = [r for r in records if r.status is TrialStatus.FINISHED]
    assert len(finished) == len(records) and len({r.key for r in finished}) == len(finished)
    seeds = {r.seed for r in finished}
    assert seeds == {42, 43}
    # 4 distinct published configurations x 2 seeds; the staged search (seed 42) adds only the
    # configurations off the paper's path.
    paper_keys = {trial_key(c, finished[0].split) for g in
                  replicate_groups(load_study(replicated.parent / "rep.toml"))
                  for c in g}  # fmt: skip
    assert len(paper_keys) == 8 and paper_keys <= {r.key for r in finished}
    clean = [r for r in finished if r.split["selection"] == "validation"]
    assert len(clean) == 8  # --with-clean: the same 4 configurations x 2 seeds, other split
    held = [r for r in finished if r.split.get("arm") == HELD_OUT_ARM]
    assert len(held) == 8  # and again, test-selected on the clean run's training images
    assert all(r.split["selection"] == "test" and r.n_train == clean[0].n_train for r in held)
    arms = paper_keys | {r.key for r in clean + held}
    assert all(r.seed == 42 for r in finished if r.key not in arms)
    assert all(r.correct_mask is not None and len(r.correct_mask) == 250 for r in finished)
    for r in finished:  # the stored mask is the best epoch's: it counts the same accuracy
        assert r.correct_mask.mean() == pytest.approx(r.best_accuracy, abs=1e-12)


def test_replication_json_has_every_key_and_the_stores_numbers(replicated):
    data = json.loads((replicated / REPLICATION_FILE).read_text())
    assert len(data["cells"]) == 6 and len(data["claims"]) == 4
    by_seed = {(r.key): r for r in open_run(replicated).records()}
    split = next(
        r.split for r in by_seed.values() if r.split["selection"] == "test" and "arm" not in r.split
    )  # the paper's arm
    study = load_study(replicated.parent / "rep.toml")
    ids = {}
    for cell in data["cells"]:
        assert set(cell) >= {"table", "row", "config", "config_id", "published", "mean",
                             "ci95", "prediction95", "sd", "n", "seeds", "accuracies",
                             "verdict"}  # fmt: skip
        assert cell["table"] in ("I", "II", "III") and cell["seeds"] == [42, 43]
        config = study.config(
            seed=42, **{k: cell["config"][k] for k in ("topology", "optimizer", "lr", "activation")}
        )
        stored = [by_seed[trial_key(config.replace(seed=s), split)].best_accuracy for s in (42, 43)]
        assert cell["accuracies"] == [pytest.approx(100 * a, abs=1e-3) for a in stored]
        interval, one = v.seed_interval(stored), v.prediction_interval(stored)
        assert cell["mean"] == pytest.approx(100 * interval.mean, abs=1e-3) and cell["n"] == 2
        assert cell["ci95"] == [pytest.approx(100 * interval.low, abs=1e-3),
                                pytest.approx(100 * interval.high, abs=1e-3)]  # fmt: skip
        assert cell["prediction95"] == [pytest.approx(100 * one.low, abs=1e-3),
                                        pytest.approx(100 * one.high, abs=1e-3)]  # fmt: skip
        assert cell["sd"] == pytest.approx(100 * one.sd, abs=1e-3)
        diverged = any(v.failed_to_train(a, 10) for a in stored) or any(
            by_seed[trial_key(config.replace(seed=s), split)].outcome.value == "diverged"
            for s in (42, 43))  # fmt: skip
        assert cell["verdict"] == v.cell_verdict(cell["published"], one, diverged=diverged)
        assert cell["verdict"] in v.CELL_VERDICTS
        ids.setdefault(cell["config_id"], set()).add(json.dumps(cell["config"], sort_keys=True))
    assert len(ids) == 4 and all(len(c) == 1 for c in ids.values())  # 6 numbers, 4 configs
    counts = data["counts"]
    assert counts["numbers"]["total"] == 6 and counts["configurations"]["total"] == 4
    assert sum(counts["numbers"][k] for k in v.CELL_VERDICTS) == 6
    claims = {c["id"]: c for c in data["claims"]}
    assert set(claims) == {"I", "II", "III", "final"}
    p_values = [x["p"] for c in data["claims"] for x in c["comparisons"]]
    tested = [p for p in p_values if p is not None]
    holm = v.holm(tested)
    assert [
        x["p_holm"] for c in data["claims"] for x in c["comparisons"] if x["p"] is not None
    ] == pytest.approx(holm)  # one family: all claims together
    for claim in claims.values():
        assert claim["verdict"] in v.CLAIM_VERDICTS
        assert claim["test"] and claim["n"] == 2 and len(claim["ci95"]) == 2
        for comparison in claim["comparisons"]:
            assert set(comparison) >= {"alternative", "estimate", "ci95", "p", "p_holm"}
    assert [x["alternative"] for x in claims["III"]["comparisons"]] == ["lr 0.05"]
    # the paper's final configuration: T2 (87.1 beats 85.2), Adam, lr 0.01 (89.0 beats 87.5)
    assert "T2, Adam, 0.01, ReLU" in claims["final"]["text"]
    assert data["paper_choice"]["config_id"] == "T2-Adam-0.01-ReLU"
    # one headline; the final model is the recommended configuration at the FIRST seed
    assert data["headline"].endswith(".") and "89% is" in data["headline"]
    recommended, final = data["recommended"], data["final_model"]
    assert final["config_id"] == recommended["config_id"] and final["seed"] == 42
    assert "equivalent within ±0.5 pp" in recommended["rule"] and "at n = 2" in recommended["rule"]
    assert recommended["margin"] == 0.5 and data["schema_version"] == 3
    for comparison in recommended["equivalence"]:  # the best against each cheaper one
        assert comparison["n_params"] < recommended["best_by_mean"]["n_params"]
        assert comparison["n"] == 2 and len(comparison["ci90"]) == 2
    # the tiny paper gives T2/SGD/0.01 and T2/Adam/0.01 two numbers each, as the real one does
    # for T4/Adam/0.01/ReLU (89.5 in Table II, 89.0 in Table III)
    assert len(data["notes"]) == 2
    assert "87.1% in Table I but 89% in Table II" in data["notes"][0]
    assert "89.5% in Table II but 89% in Table III" in data["notes"][1]


def test_the_final_model_is_the_recommended_configuration_at_the_first_seed(replicated):
    data = json.loads((replicated / REPLICATION_FILE).read_text())
    model = load_model(replicated / MODEL_FILE)
    config = model.config
    assert config.seed == 42  # fixed in advance: never the best seed
    assert config_id(config) == data["final_model"]["config_id"]
    assert model.metadata["metrics"]["test_accuracy"] == pytest.approx(
        data["final_model"]["test_accuracy"] / 100, abs=1e-6
    )


def test_a_model_file_that_is_not_the_verdicts_final_model_is_said_so(replicated, tmp_path):
    """A folder whose final_best_model.pth is another configuration or seed than the verdict
    chooses (saved under an older rule) gets a warning above the model card, not a silent
    card of the wrong model; the folder as the run left it gets none."""
    import shutil

    from hpstudy.predict.modelfile import save_model
    from hpstudy.report.sections import final_model_mismatch

    assert "final_best_model.pth holds" not in (replicated / "report.md").read_text()
    run = tmp_path / "run"
    shutil.copytree(replicated, run)
    model = load_model(run / MODEL_FILE)
    other = model.config.replace(seed=43)  # the same network at another seed
    save_model(run / MODEL_FILE, state_dict=model.model.state_dict(), config=other,
               normalization=model.metadata["normalization"], metrics=model.metadata["metrics"],
               data_digests=model.metadata["data_digests"],
               class_names=model.class_names)  # fmt: skip
    build_report(run, command="hpstudy report run")
    md = (run / "report.md").read_text()
    assert "final_best_model.pth holds" in md and "at seed 43, not the verdict's" in md
    assert final_model_mismatch(other, model.config, 42) is not None
    assert final_model_mismatch(model.config, model.config, 42) is None
    assert final_model_mismatch(model.config, model.config.replace(lr=0.5), 42) is not None


def test_the_run_counts_every_trial_it_trained_clean_arms_included(replicated, replicated_run):
    records = open_run(replicated).records()  # `replicated` marks the test slow (conftest)
    assert replicated_run.n_trained == len(records)  # was: only the paper's protocol's


def test_the_report_leads_with_the_verdict_and_repeats_the_stores_numbers(replicated):
    html = (replicated / "report.html").read_text()
    md = (replicated / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[:3] == ["## Verdict", "## Are the stage winners real?",
                            "## Our staged search (the paper's method)"]  # fmt: skip
    assert "Hyperparameter Tuning of Neural Networks Using PyTorch" in md.split("## Verdict")[0]
    report = json.loads((replicated / "report.json").read_text())
    stored = json.loads((replicated / REPLICATION_FILE).read_text())
    rows = report["tables"]["replication-cells"]["data"]
    assert [r["accuracies"] for r in rows] == [c["accuracies"] for c in stored["cells"]]
    claims = report["tables"]["claims"]["data"]
    assert [c["verdict"] for c in claims] == [c["verdict"] for c in stored["claims"]]
    assert 'id="claims"' in html and "McNemar exact" in html
    # one final configuration on the page: the recommended one, at the first seed
    assert "Final configuration:" not in md and "the recommended configuration at the first" in md
    assert stored["headline"] in md
    noise = report["tables"]["winners-vs-noise"]["data"]
    assert noise and all(0 <= row["p_value"] <= 1 for row in noise)
    assert not any(math.isnan(row["difference_pp"]) for row in noise)


def test_with_clean_measures_the_leak_per_cell_from_the_store(replicated):
    data = json.loads((replicated / REPLICATION_FILE).read_text())
    store = open_run(replicated)
    tests = store.test_accuracies()
    records = [r for r in store.records() if r.status is TrialStatus.FINISHED]

    def arm(keep):
        return {(r.config.replace(seed=0), r.seed): r for r in records if keep(r.split)}

    clean = arm(lambda s: s["selection"] == "validation")
    held = arm(lambda s: s.get("arm") == HELD_OUT_ARM)
    leaky = arm(lambda s: s["selection"] == "test" and "arm" not in s)
    assert len(data["leak"]) == 4 and len(tests) == 8  # the test set read once per clean trial
    for gap in data["leak"]:
        config = load_study(replicated.parent / "rep.toml").config(
            seed=0, **{k: gap["config"][k] for k in ("topology", "optimizer", "lr", "activation")}
        )
        clean_test = [tests[clean[config, s].key] for s in (42, 43)]
        paper = [leaky[config, s].best_accuracy for s in (42, 43)]
        other = [held[config, s].best_accuracy for s in (42, 43)]
        assert gap["clean_test"]["mean"] == pytest.approx(50 * sum(clean_test), abs=1e-3)
        assert gap["held_out"]["mean"] == pytest.approx(50 * sum(other), abs=1e-3)
        want = v.paired_difference(paper, clean_test)
        assert gap["gap"]["estimate"] == pytest.approx(want.estimate, abs=1e-3)
        assert gap["gap"]["n"] == 2
        # the two parts add up to the gap, pair by pair
        parts = gap["selection"]["estimate"] + gap["size"]["estimate"]
        assert parts == pytest.approx(gap["gap"]["estimate"], abs=1e-3)
    pooled = data["leak_pooled"]
    trains = [g for g in data["leak"] if g["trains"]]
    assert pooled["n_configs"] == len(trains) and pooled["total"]["n"] == 2 * len(trains)
    assert pooled["total"]["estimate"] == pytest.approx(
        sum(g["gap"]["estimate"] for g in trains) / len(trains), abs=1e-3
    )
    assert pooled["selection"]["estimate"] + pooled["size"]["estimate"] == pytest.approx(
        pooled["total"]["estimate"], abs=1e-3
    )
    assert pooled["n_train"] == 320 and pooled["n_train_clean"] == 320  # limit_train applies
    html = (replicated / "report.html").read_text()
    assert 'id="leak-per-cell"' in html and "The leak over all" in html


def test_a_missing_seed_is_left_out_of_the_pairs_not_shifted(replicated):
    # An unfinished or failed seed must not pair seed 43 of one cell with seed 42 of another.
    store = open_run(replicated)
    records = store.records()
    study = load_study(replicated.parent / "rep.toml")
    split = next(r.split for r in records
                 if r.split["selection"] == "test" and "arm" not in r.split)  # fmt: skip
    t1 = study.config(seed=42, **paper_cells(study)[0].factors)  # Table I, T1
    dropped = [r for r in records if r.key != trial_key(t1, split)]
    full = judge_run(study, records, split)
    less = judge_run(study, dropped, split)
    assert less.cells[0].seeds == (43,) and full.cells[0].seeds == (42, 43)
    (comparison,) = less.claims[0].comparisons  # T2 minus T1, over seed 43 only
    assert comparison.difference.n == 1
    t2 = less.cells[1]
    assert comparison.difference.estimate == pytest.approx(
        100 * (t2.accuracies[1] - less.cells[0].accuracies[0])
    )
    assert not less.cells[0].prediction.known  # one seed: no prediction interval
    assert less.counts["numbers"]["unmeasured"] == (less.cells[0].verdict == "")
