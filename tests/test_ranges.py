"""Ranges in a search study's [space] (lr = { low, high, log }, depth and width): parsing, the
refusals, Optuna's float and integer distributions, a real search over them, its report."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpstudy.config.config import Config
from hpstudy.config.factors import Range, config_values, shown, space_size, topologies, value_of
from hpstudy.config.studyfile import parse_study
from hpstudy.errors import UserError
from hpstudy.report import build_report
from hpstudy.runner.execute import check_plan, run_study
from hpstudy.runner.options import RunOptions
from hpstudy.runner.status import run_status
from hpstudy.storage import Store, TrialStatus, default_url, distributions_of, params_of
from hpstudy.storage.rundir import open_run
from hpstudy.storage.search import Searcher
from hpstudy.tabulate.plans import grid_groups
from tiny_studies import stick_sampler_on

QUICK = {"limit_train": 320, "limit_eval": 250}


def study_text(space: str, *, protocol: str = "search", extra: str = "") -> str:
    stages = '\n[[stages]]\nfactor = "optimizer"\n' if protocol == "staged" else ""
    return (f'name = "ranges"\nprotocol = "{protocol}"\nselection = "validation"\n'
            f"max_epochs = 1\n[validation]\nsize = 250\n{extra}[space]\n{space}\n"
            f"{stages}")  # fmt: skip


def parse(space: str, **kwargs):
    return parse_study(study_text(space, **kwargs), "ranges.toml")


RANGES = """
depth = { low = 1, high = 2 }
width = { low = 16, high = 64, log = true }
optimizer = ["sgd", "adam"]
lr = { low = 1e-3, high = 0.1, log = true }
momentum = { low = 0.5, high = 0.9 }
activation = ["relu"]
"""


def test_a_search_space_with_ranges_parses_to_ranges_and_optuna_distributions():
    study = parse(RANGES)
    space = study.space
    assert space["lr"] == Range(1e-3, 0.1, log=True)
    assert space["momentum"] == Range(0.5, 0.9)
    assert space["depth"] == Range(1, 2, integer=True) and isinstance(space["depth"].low, int)
    assert space["width"] == Range(16, 64, log=True, integer=True)
    assert "topology" not in space  # depth and width stand for it
    assert space_size(space) == math.inf
    dists = distributions_of(space)
    assert dists["lr"] == FloatDistribution(1e-3, 0.1, log=True)
    assert dists["momentum"] == FloatDistribution(0.5, 0.9)
    assert dists["depth"] == IntDistribution(1, 2)
    assert dists["width"] == IntDistribution(16, 64, log=True)
    assert dists["optimizer"] == CategoricalDistribution(["sgd", "adam"])
    # depth and width become the Config's topology; a range's param is the value itself
    config = study.config(seed=42, depth=2, width=40, optimizer="sgd", lr=0.0123,
                          momentum=0.7, activation="relu")  # fmt: skip
    assert config.topology == (40, 40)
    assert params_of(config, list(dists)) == {"depth": 2, "width": 40, "optimizer": "sgd",
                                              "lr": 0.0123, "activation": "relu",
                                              "momentum": 0.7}  # fmt: skip
    # momentum means nothing to Adam: Config drops it, and the trial has no param for it
    adam = study.config(seed=42, depth=1, width=16, optimizer="adam", lr=0.01,
                        momentum=0.7, activation="relu")  # fmt: skip
    assert adam.momentum == 0.0 and "momentum" not in params_of(adam, list(dists))


def test_depth_and_width_are_a_topology_everywhere_a_factor_is_named():
    assert config_values({"depth": 3, "width": 8, "lr": 0.1}) == {"lr": 0.1, "topology": (8, 8, 8)}
    with pytest.raises(UserError, match="depth and width go together"):
        config_values({"depth": 2, "lr": 0.1})
    space = {"depth": Range(1, 3, integer=True), "width": (16, 32), "optimizer": ("sgd",)}
    assert shown(space) == ("topology", "optimizer")  # what a table's label shows
    assert space_size(space) == 3 * 2 * 1
    assert topologies(space) == [(32, 32, 32)]  # the widest, for the plan's FLOP estimate
    assert value_of(Config(topology=(8, 8)), "depth") == 2
    assert value_of(Config(topology=(8, 8)), "width") == 8


def test_a_big_search_over_depth_and_width_names_its_cost_before_it_runs():
    study = dataclasses.replace(parse(RANGES), n_trials=20_000, confirm_top=0)
    with pytest.raises(UserError, match=r"plans up to 20,000 trials \(20,000 model-epochs, up"):
        check_plan(study, RunOptions())  # its FLOPs from the deepest, widest topology


def test_lists_keep_their_categorical_params_and_keys():
    study = parse('lr = [0.001, 0.01]\ntopology = ["T1", [512, 256]]', protocol="grid")
    assert study.space["lr"] == (0.001, 0.01)
    assert distributions_of(study.space)["topology"] == CategoricalDistribution(["T1", "T3"])
    configs = [g[0] for g in grid_groups(study)]
    assert len(configs) == 2 * 2 * 3 * 5
    assert Config(topology="T1", lr=0.001, max_epochs=1) in set(configs)


def test_grid_depth_and_width_lists_are_topologies_and_ignored_factors_collapse():
    study = parse('depth = [1, 2]\nwidth = [16, 32]\noptimizer = ["sgd", "adam"]\n'
                  'lr = [0.05]\nactivation = ["relu"]\nmomentum = [0.5, 0.9]',
                  protocol="grid")  # fmt: skip
    configs = [g[0] for g in grid_groups(study)]
    assert sorted({c.topology for c in configs}) == [(16,), (16, 16), (32,), (32, 32)]
    # SGD at two momenta, Adam once (its momentum is not a training difference)
    assert len(configs) == 4 * 3 and len(set(configs)) == len(configs)


@pytest.mark.parametrize(
    ("protocol", "space", "message"),
    [
        ("grid", "lr = { low = 1e-4, high = 0.3, log = true }",
         "space.lr: a range is for search studies; a grid study trains every value it names: "
         "list the values instead, such as lr = [0.0001, 0.00548, 0.3]"),
        ("staged", "momentum = { low = 0.5, high = 0.9 }",
         "space.momentum: a range is for search studies; a staged study"),
        ("grid", 'depth = { low = 1, high = 4 }\nwidth = [64]',
         "space.depth: a range is for search studies; a grid study trains every value it "
         "names: list the values instead, such as depth = [1, 2, 4]"),
        ("search", "lr = { low = 0.3, high = 1e-4 }",
         "space.lr: low must be <= high, got low=0.3, high=0.0001"),
        ("search", "lr = { low = 0, high = 0.1, log = true }",
         "space.lr.low: a log range needs low > 0, got low=0; give a positive low or "
         "log = false"),
        ("search", "weight_decay = { low = 0, high = 1e-2, log = true }",
         "space.weight_decay.low: a log range needs low > 0"),
        ("search", "lr = { low = 0, high = 0.1 }", "space.lr.low: lr must be > 0, got lr=0.0"),
        ("search", "momentum = { low = 0, high = 1 }",
         "space.momentum.high: momentum must be a number in [0, 1), got momentum=1.0"),
        ("search", "dropout = { low = 0.1, high = 1.0 }",
         "space.dropout.high: dropout must be a number in [0, 1), got dropout=1.0"),
        ("search", "weight_decay = { low = -1e-4, high = 1e-2 }",
         "space.weight_decay.low: weight_decay must be a number >= 0, got weight_decay=-0.0001"),
        ("search", "lr = { low = 1e-4, high = 0.3, step = 0.1 }",
         "space.lr.step: unknown key; allowed keys here: high, log, low"),
        ("search", "lr = { low = 1e-4 }", "space.lr.high: must be a finite number, got None"),
        ("search", "lr = { low = 1e-4, high = 0.3, log = 'yes' }",
         "space.lr.log: must be true or false, got 'yes'"),
        ("search", "optimizer = { low = 0, high = 1 }",
         "space.optimizer: optimizer takes a list of values, not a range; ranges are for "
         "depth, width, lr, momentum, weight_decay, dropout"),
        ("search", "schedule = { low = 0, high = 1 }",
         "space.schedule: learning-rate schedule takes a list of values, not a range"),
        ("search", "depth = { low = 1, high = 2.5 }\nwidth = [64]",
         "space.depth.high: must be an integer, got 2.5"),
        ("search", "depth = { low = 1, high = 100 }\nwidth = [64]",
         "space.depth.high: depth must be at most 64 hidden layers, got depth=100"),
        ("search", "depth = { low = 1, high = 2 }", "space.width: missing: depth and width go "
         "together"),
        ("search", 'depth = [1]\nwidth = [8]\ntopology = ["T1"]',
         "space.depth: depth and width stand for topology = (width,) * depth; give depth and "
         "width or topology, not both"),
        ("staged", "depth = [1]\nwidth = [8]",
         "space.depth: depth and width are for grid and search studies; a staged study lists "
         "topologies"),
        ("search", "momentum = [0.9, 1.5]",
         "space.momentum[1]: momentum must be a number in [0, 1), got momentum=1.5"),
        ("grid", "dropout = [0.5, 1.0]",
         "space.dropout[1]: dropout must be a number in [0, 1), got dropout=1.0"),
        ("grid", "weight_decay = [-0.1]",
         "space.weight_decay[0]: weight_decay must be a number >= 0, got weight_decay=-0.1"),
        ("grid", "nesterov = [true]",
         "space.nesterov: nesterov = true needs momentum > 0 (as SGD does), and this space "
         "leaves momentum at 0: add momentum values above 0 to [space], such as "
         "momentum = [0.9]"),
        ("grid", "nesterov = [true, false]\nmomentum = [0, 0.9]",
         "space.nesterov: nesterov = true needs momentum > 0 (as SGD does), but "
         "space.momentum includes 0 (0, 0.9): give momentum values above 0"),
        ("search", "nesterov = [true]\nmomentum = { low = 0, high = 0.9 }",
         "space.nesterov: nesterov = true needs momentum > 0 (as SGD does), but "
         "space.momentum includes 0 (0..0.9)"),
    ],
)  # fmt: skip
def test_bad_ranges_and_values_are_one_line_errors_naming_the_key(protocol, space, message):
    with pytest.raises(UserError) as caught:
        parse(space, protocol=protocol)
    text = str(caught.value)
    assert text.startswith("ranges.toml: ") and "\n" not in text
    assert message in text


def test_nesterov_without_sgd_or_with_momentum_above_zero_is_fine():
    assert parse('optimizer = ["adam"]\nnesterov = [true]').space["nesterov"] == (True,)
    space = parse("nesterov = [true]\nmomentum = { low = 0.5, high = 0.9 }").space
    assert space["momentum"] == Range(0.5, 0.9)


def test_a_staged_start_that_cannot_be_a_configuration_is_refused():
    text = study_text("nesterov = [true, false]\nmomentum = [0.9]", protocol="staged",
                      extra="")  # fmt: skip
    text += "[start]\ntopology = 'T1'\nlr = 0.01\nactivation = 'relu'\nnesterov = true\n"
    text += "momentum = 0.0\n"
    with pytest.raises(UserError, match=r"ranges.toml: start: nesterov = true needs momentum"):
        parse_study(text, "ranges.toml")


@pytest.mark.slow  # 1.3 to 2.2 s here: the fast tier stays under a minute
def test_the_searcher_samples_inside_ranges_log_uniformly(tmp_path: Path):
    """Without training: 40 proposals (TPE's prior while nothing is complete) fall inside the
    ranges, integers for depth and width, and lr and width are uniform in log space: about half
    below the geometric middle (0.25-0.75 is 3 standard errors), where a linear uniform would
    put 1% (lr) or 11% (width)."""
    space = parse(RANGES.replace("high = 64", "high = 1024").replace("high = 0.1", "high = 10")
                  ).space  # fmt: skip
    assert space["lr"] == Range(1e-3, 10.0, log=True)
    store = Store(default_url(tmp_path), "sampling")
    store.create_or_load()
    searcher = Searcher(store, space, sampler_seed=0, pruner="none")
    params = [searcher.ask().params for _ in range(40)]
    lrs = [p["lr"] for p in params]
    assert all(1e-3 <= lr <= 10 for lr in lrs)
    assert 0.25 < sum(lr < 0.1 for lr in lrs) / len(lrs) < 0.75
    widths = [p["width"] for p in params]
    assert all(isinstance(w, int) and 16 <= w <= 1024 for w in widths)
    assert 0.25 < sum(w < 128 for w in widths) / len(widths) < 0.75
    assert {p["depth"] for p in params} == {1, 2}
    sgd = [p for p in params if p["optimizer"] == "sgd"]
    assert sgd and all(0.5 <= p["momentum"] <= 0.9 for p in sgd)
    assert all("momentum" not in p for p in params if p["optimizer"] == "adam")


def write_ranges(tmp_path: Path, **search) -> Path:
    search = {"n_trials": 8, "batch": 4, "pruner": '"none"', "confirm_top": 1,
              "confirm_seeds": 2, **search}  # fmt: skip
    extra = "[search]\n" + "".join(f"{k} = {v}\n" for k, v in search.items())
    path = tmp_path / "ranges.toml"
    path.write_text(study_text(RANGES) + extra, encoding="utf-8")
    return path


def run_ranges(tmp_path: Path, **search):
    study = parse_study(write_ranges(tmp_path, **search).read_text(), tmp_path / "ranges.toml")
    return run_study(study, RunOptions(out=str(tmp_path / "run"), **QUICK))


@pytest.mark.slow  # 1.3 to 2.2 s here: the fast tier stays under a minute
def test_a_search_over_ranges_trains_its_samples_and_tells_repeats(tmp_path, monkeypatch):
    summary = run_ranges(tmp_path)
    store = open_run(summary.run_dir)
    trials = {t.number: t for t in store._optuna.get_trials()}
    records = [r for r in store.records() if r.status is TrialStatus.FINISHED]
    assert summary.n_trained == len(records) == 8 + 2  # 8 configurations, 1 x 2 confirmations
    for r in records:
        params, config = trials[r.number].params, r.config
        assert config.lr == params["lr"] and 1e-3 <= config.lr <= 0.1  # the param is the value
        assert config.topology == (params["width"],) * params["depth"]
        assert 16 <= params["width"] <= 64 and params["depth"] in (1, 2)
        if config.optimizer == "sgd":
            assert config.momentum == params["momentum"] and 0.5 <= config.momentum <= 0.9
        else:
            assert "momentum" not in params and config.momentum == 0.0
    search, confirmed = summary.tables
    assert len(search.rows) == 8 and "budget of 8 distinct configurations was spent" in search.rule
    assert len(confirmed.rows) == 1
    top = search.rows[0].config
    optimizer = {"sgd": "SGD", "adam": "Adam"}[top.optimizer]
    label = f"{'-'.join(map(str, top.topology))} {optimizer} {top.lr:g} ReLU"
    label += f" momentum {top.momentum:g}" if top.optimizer == "sgd" else ""
    assert search.rows[0].label == label  # no momentum shown for Adam

    # A proposal that repeats a trained configuration is told its result, never trained.
    known = search.rows[-1].config
    stick_sampler_on(monkeypatch, known, max_repeats=3)
    again = run_ranges(tmp_path, n_trials=10)
    assert again.n_trained == 0
    told = [t for t in open_run(again.run_dir)._optuna.get_trials() if "repeat_of" in t.user_attrs]
    assert len(told) == 3 and all(t.value == search.rows[-1].selection.mean for t in told)
    assert "ended after 8 of 10 configurations" in again.tables[0].rule


@pytest.mark.slow
def test_report_and_status_of_a_search_over_ranges(tmp_path: Path):
    summary = run_ranges(tmp_path, n_trials=12, batch=6)
    paths = build_report(summary.run_dir)
    report = json.loads((summary.run_dir / "report.json").read_text())
    effects = report["tables"]["main-effects"]["data"]
    levels = {}
    for e in effects:
        levels.setdefault(e["factor"], []).append(e["level"])
    assert set(levels) == {"depth", "width", "optimizer", "lr", "activation", "momentum"}
    assert levels["depth"] == ["1", "2"] or levels["depth"] in (["1"], ["2"])
    assert len(levels["lr"]) == 4 and all("–" in level for level in levels["lr"])  # 4 bins
    n_lr = sum(e["accuracy"]["n"] for e in effects if e["factor"] == "lr")
    assert n_lr == 12  # every configuration in one bin
    n_momentum = sum(e["accuracy"]["n"] for e in effects if e["factor"] == "momentum")
    sgd = sum(r.config.optimizer == "sgd" for r in summary.tables[0].rows)
    assert n_momentum == sgd  # momentum's levels hold SGD's configurations only
    found = report["tables"]["importances"]
    importances = {row["factor"] for row in found["data"]}
    assert "optimizer" in importances and importances <= set(levels) - {"momentum"}
    assert any("momentum left out" in note for note in found["notes"])  # SGD's trials only
    html = Path(paths.html).read_text() if hasattr(paths, "html") else ""
    html = html or (summary.run_dir / "report.html").read_text()
    assert "Searched as ranges: depth, width, learning rate, momentum" in html
    assert "optimizer_lr.png" not in html  # no heatmap without listed topology and lr
    status = run_status(str(summary.run_dir))
    assert status["counts"]["complete"] == 12 + 2
    assert status["best"]["config"] == summary.tables[-1].winner.config.to_dict()


def test_a_grid_over_depth_width_and_sgd_momentum_beside_adam_runs(tmp_path: Path):
    """Adam's configurations have no momentum param (its list holds no 0, which Adam's reset
    momentum would have needed as a categorical choice); each is trained once."""
    path = tmp_path / "grid.toml"
    path.write_text(study_text('depth = [1, 2]\nwidth = [16]\noptimizer = ["sgd", "adam"]\n'
                               'lr = [0.05]\nactivation = ["relu"]\nmomentum = [0.5, 0.9]',
                               protocol="grid"))  # fmt: skip
    summary = run_study(parse_study(path.read_text(), path),
                        RunOptions(out=str(tmp_path / "run"), **QUICK))  # fmt: skip
    labels = sorted(row.label for row in summary.tables[0].rows)
    assert labels == ["16 Adam 0.05 ReLU", "16 SGD 0.05 ReLU momentum 0.5",
                      "16 SGD 0.05 ReLU momentum 0.9", "16-16 Adam 0.05 ReLU",
                      "16-16 SGD 0.05 ReLU momentum 0.5",
                      "16-16 SGD 0.05 ReLU momentum 0.9"]  # fmt: skip
    store = open_run(summary.run_dir)
    params = [t.params for t in store._optuna.get_trials()]
    assert summary.n_trained == len(params) == 6
    assert sorted((p["depth"], p["optimizer"], p.get("momentum")) for p in params) == [
        (1, "adam", None), (1, "sgd", 0.5), (1, "sgd", 0.9),
        (2, "adam", None), (2, "sgd", 0.5), (2, "sgd", 0.9)]  # fmt: skip
