"""Study files: the shipped ones load as documented; every kind of mistake names key and file."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from hpstudy import cli
from hpstudy.config.factors import PAPER_FACTORS as FACTORS
from hpstudy.config.study import ProtocolKind, Selection
from hpstudy.config.studyfile import load_study
from hpstudy.errors import UserError
from tiny_studies import write_study


def test_paper_study_is_the_paper_verbatim():
    study = load_study("paper")
    assert study.protocol is ProtocolKind.STAGED and study.selection is Selection.TEST
    assert study.seeds == (42,) and study.batch_size == 64
    assert (study.max_epochs, study.patience) == (20, 3)
    assert study.normalization == {"mean": 0.5, "std": 0.5}
    assert [s.factor for s in study.stages] == ["topology", "optimizer", "lr", "activation"]
    assert study.stages[0].values == ((128,), (256, 128), (512, 256), (256, 128, 64), (1024, 512))
    assert study.stages[2].values == (0.001, 0.005, 0.01, 0.05, 0.1)
    assert study.stages[3].values == ("relu", "sigmoid", "tanh", "leaky_relu", "elu")
    assert study.start == {"topology": (128,), "optimizer": "sgd", "lr": 0.01, "activation": "relu"}
    published = [s.published for s in study.stages]
    assert published == [
        (85.2, 87.1, 88.0, 89.0, 87.8),
        (89.0, 89.5, 88.7),
        (87.9, 89.5, 89.0, 87.5, 86.2),
        (89.5, 86.3, 87.1, 89.2, 88.8),
    ]
    assert study.published_final == 89.5


def test_other_shipped_studies():
    clean, grid, search = load_study("clean"), load_study("grid"), load_study("search")
    assert clean.selection is Selection.VALIDATION and clean.n_seeds == 5
    assert (clean.validation_size, len(clean.stages)) == (6000, 4)
    points = list(itertools.product(*(grid.space[f] for f in FACTORS)))
    assert grid.protocol is ProtocolKind.GRID and len(points) == 375
    assert search.protocol is ProtocolKind.SEARCH and search.n_trials >= search.batch > 1


def test_the_wide_study_searches_the_new_factors_cleanly_and_confirms():
    wide = load_study("wide")
    assert wide.protocol is ProtocolKind.SEARCH and wide.selection is Selection.VALIDATION
    assert (wide.confirm_top, wide.confirm_seeds) == (3, 5)
    new = {"momentum", "nesterov", "weight_decay", "dropout", "schedule", "batch_size"}
    assert new <= set(wide.space)
    assert wide.config(seed=1, dropout=0.2, schedule="cosine").dropout == 0.2


def test_overrides_and_seeds():
    study = load_study("paper").with_overrides(n_seeds=3, max_epochs=2)
    assert study.seeds == (42, 43, 44) and study.config(seed=43, topology="T4").max_epochs == 2
    with pytest.raises(UserError, match="--seeds must be an integer >= 1, got 0"):
        load_study("paper").with_overrides(n_seeds=0)


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        ("max_epochs = 2", "max_epochs = 2\nmax_epoch = 3", r"max_epoch: unknown key"),
        ("max_epochs = 2", 'max_epochs = "two"', r"max_epochs: must be an integer >= 1, got 'two'"),
        ("patience = 3", "patience = 0", r"patience: must be an integer >= 1, got 0"),
        ("lr = [0.01, 0.05]", "lr = [0.01, -0.05]", r"space.lr\[1\]: lr must be > 0, got lr=-0.05"),
        ('topology = ["T1", "T2"]', 'topology = ["T1", "T9"]', r"space.topology\[1\]: unknown"),
        ('protocol = "staged"', 'protocol = "random"', r"protocol: must be one of"),
        ("std = 0.5", "std = 0", r"normalization.std: must be a positive number, got 0"),
        ("published = [85.2, 87.1]", "published = [85.2]", r"stages\[0\].published: must list"),
        ('factor = "lr"', 'factor = "lr"\nvalues = [0.1]', r"stages\[2\].values: 0.1 is not in"),
        ('factor = "lr"', 'factor = "momentum"', r"stages\[2\].factor: must be one of"),
        ("size = 250", "size = 60000", r"validation.size: must be below 60000"),
        ("[validation]", "[validation]\nshuffle = true", r"validation.shuffle: unknown key"),
        ("n_seeds = 1", "n_seeds = 1.5", r"n_seeds: must be an integer >= 1, got 1.5"),
    ],
)
def test_mistakes_name_key_and_file(tmp_path: Path, replace: str, by: str, message: str):
    path = write_study(tmp_path)
    text = path.read_text()
    assert replace in text
    path.write_text(text.replace(replace, by, 1))
    with pytest.raises(UserError, match=message) as info:
        load_study(path)
    assert str(path) in str(info.value)


def test_not_toml_and_missing_file(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(UserError, match="is not valid TOML"):
        load_study(bad)
    with pytest.raises(UserError, match=r"no study named 'nosuch'; known studies: .*paper"):
        load_study("nosuch")


def test_cli_exits_2_with_one_line(tmp_path: Path, capsys):
    path = write_study(tmp_path)
    path.write_text(path.read_text().replace("patience = 3", "patience = -1"))
    code = cli.main(["run", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "patience: must be an integer >= 1, got -1" in err
    assert str(path) in err
    assert not (tmp_path / "run").exists()  # nothing written for a bad study
