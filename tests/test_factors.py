"""Factors are declared once (hpstudy.config.factors): a new one shows up everywhere from there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpstudy.config import factors
from hpstudy.config.config import Config
from hpstudy.config.factors import FACTORS, Factor, config_text, factor_label, factors_of, searched
from hpstudy.config.studyfile import load_study, parse_study
from hpstudy.errors import UserError
from hpstudy.report import build_report
from hpstudy.runner.execute import run_study
from hpstudy.runner.options import RunOptions
from hpstudy.storage import distributions_of, params_of
from hpstudy.storage.rundir import open_run

TOY_GRID = """
name = "toy"
protocol = "grid"
selection = "test"
n_seeds = 1
max_epochs = 1
[space]
topology = ["T1"]
optimizer = ["sgd"]
lr = [0.05]
activation = ["relu"]
batch_size = [32, 128]
"""


def test_the_paper_factors_parse_label_and_map_to_optuna_params():
    assert FACTORS["topology"].parse("t4") == (256, 128, 64)
    assert factor_label("topology", (256, 128, 64)) == "T4" and factor_label("lr", 0.005) == "0.005"
    config = Config(topology="T4", optimizer="adam", lr=0.005)
    assert factors_of(config) == ((256, 128, 64), "adam", 0.005, "relu")
    assert config_text(config) == "T4, Adam, 0.005, ReLU"
    assert params_of(config) == {"topology": "T4", "optimizer": "adam", "lr": 0.005,
                                 "activation": "relu"}  # fmt: skip
    space = {"topology": ((128,), (7, 7)), "lr": (0.1,)}
    assert searched(space) == ("topology", "lr")
    assert distributions_of(space)["topology"].choices == ("T1", "7-7")
    with pytest.raises(UserError, match="lr must be > 0"):
        FACTORS["lr"].parse(-1)


@pytest.mark.slow
def test_a_factor_declared_in_one_place_reaches_parser_store_table_and_report(
    tmp_path: Path, monkeypatch
):
    toy = Factor("batch_size", "Batch size", "batch size", (), lambda v: f"bs{v}")
    monkeypatch.setitem(factors.FACTORS, "batch_size", toy)
    path = tmp_path / "toy.toml"
    path.write_text(TOY_GRID)
    study = load_study(path)  # the parser: [space] accepts it and checks its values
    assert study.space["batch_size"] == (32, 128)
    with pytest.raises(UserError, match=r"space\.batch_size\[0\].*batch_size must be"):
        parse_study(TOY_GRID.replace("[32, 128]", "[0, 128]"), path)
    summary = run_study(study, RunOptions(out=str(tmp_path / "run"), limit_train=320,
                                          limit_eval=250))  # fmt: skip
    store = open_run(summary.run_dir)
    records = [r for r in store.records() if r.status.is_finished]
    assert sorted(r.config.batch_size for r in records) == [32, 128]
    assert len({r.key for r in records}) == 2  # the store keys tell them apart
    params = sorted(t.params["batch_size"] for t in store._optuna.trials)
    assert params == [32, 128]  # and Optuna sees it as a param
    labels = sorted(row.label for row in summary.tables[0].rows)  # a table
    assert labels == ["T1 SGD 0.05 ReLU bs128", "T1 SGD 0.05 ReLU bs32"]
    build_report(summary.run_dir)  # the report: its main effects name the factor
    report = json.loads((summary.run_dir / "report.json").read_text())
    effects = report["tables"]["main-effects"]["data"]
    assert {(e["factor"], e["level"]) for e in effects} >= {("batch_size", "bs32"),
                                                            ("batch_size", "bs128")}  # fmt: skip
    rows = report["tables"]["main-effects"]["rows"]
    assert any(row[1] == "Batch size" for row in rows)
