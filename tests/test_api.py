"""The public Python API (`import hpstudy as hs`): cheap to import, the CLI's defaults, tables
that match the run's trials, runs opened read-only, and the README's example as written."""

from __future__ import annotations

import hashlib
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hpstudy as hs
from hpstudy.stats.tables import read_tables
from hpstudy.storage import TrialStatus, params_of
from hpstudy.storage.rundir import load_trials, read_run_info
from tiny_studies import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
FACTORS = ("topology", "optimizer", "lr", "activation")

# A 2-configuration grid on scikit-learn's digits with selection on the test set (the paper's
# leak), so its test accuracy is its selection accuracy: seconds to train.
LEAKY_DIGITS = """
name = "leaky-digits"
protocol = "grid"
selection = "test"
n_seeds = 2
max_epochs = 2
batch_size = 32
[data]
name = "digits"
test_size = 0.2
split_seed = 0
normalization = "auto"
[space]
topology = [[32]]
optimizer = ["sgd", "adam"]
lr = [0.05]
activation = ["relu"]
"""


def readme_example() -> str:
    """The fenced Python block under the README's "## Python API" heading, as written."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, "README.md's '## Python API' section has no ```python block"
    return found.group(1)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `folder`: its modification time and content hash."""
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).digest())
        for p in files
    }


@pytest.fixture(scope="module")
def api_run(tmp_path_factory) -> hs.Run:
    """The digits grid (16 configurations x 2 seeds, 2 epochs) run through `hs.run`."""
    study = hs.load_study("digits").replace(max_epochs=2, n_seeds=2)
    return hs.run(study, out=tmp_path_factory.mktemp("api") / "digits", threads=1)


@pytest.fixture(scope="module")
def leaky_run(tmp_path_factory) -> hs.Run:
    folder = tmp_path_factory.mktemp("leaky")
    (folder / "leaky.toml").write_text(LEAKY_DIGITS, encoding="utf-8")
    return hs.run(folder / "leaky.toml", out=folder / "run", threads=1)


# --- importing -------------------------------------------------------------------------------


def _python_prints(code: str) -> list[str]:
    """The lines a fresh interpreter prints running `code` (which must succeed)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=subprocess_env())  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_import_hpstudy_loads_neither_torch_nor_optuna():
    heavy = "('torch', 'optuna', 'pandas', 'hpstudy.api')"
    code = (f"import sys, hpstudy as hs; s = hs.load_study('digits').replace(n_seeds=2); "
            f"print(sorted(m for m in {heavy} if m in sys.modules)); "
            "hs.Study; print('hpstudy.config.study' in sys.modules)")  # fmt: skip
    heavy_loaded, lazy_loaded = _python_prints(code)
    assert heavy_loaded == "[]"  # a study file is read without the training stack
    assert lazy_loaded == "True"  # the check sees a module once a lazy name is used


def test_the_public_names_are_exported():
    for name in ("load_study", "run", "open_run", "Run", "Best", "Study", "Config", "UserError"):
        assert name in hs.__all__ and name in dir(hs) and getattr(hs, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hs.nope  # noqa: B018


# --- Study.replace and run's options --------------------------------------------------------


def test_study_replace_changes_what_the_command_line_can():
    study = hs.load_study("digits")
    changed = study.replace(max_epochs=5, n_seeds=3)
    assert (changed.max_epochs, changed.seeds) == (5, (42, 43, 44))
    assert (study.max_epochs, study.n_seeds) == (15, 3)  # frozen: the original is unchanged
    assert changed.replace() == changed


def test_study_replace_refuses_other_settings_and_bad_values():
    study = hs.load_study("digits")
    with pytest.raises(hs.UserError, match=r"takes n_seeds, .*got 'patience'; change patience "
                                           r"in the study file .*digits\.toml"):  # fmt: skip
        study.replace(patience=5)
    with pytest.raises(hs.UserError, match="must be an integer >= 1, got 0"):
        study.replace(max_epochs=0)
    with pytest.raises(hs.UserError, match="--time-budget is for search studies"):
        study.replace(time_budget_s=60)
    replicate = hs.load_study("replicate")
    assert replicate.replace(with_clean=True).with_clean
    with pytest.raises(hs.UserError, match=r"already true for replicate .*cannot record"):
        replicate.replace(with_clean=True).replace(with_clean=False)


def test_run_refuses_an_unknown_option_before_training(tmp_path):
    with pytest.raises(hs.UserError, match=r"unknown option 'epochs'.*limit_train"):
        hs.run("digits", out=tmp_path / "x", epochs=2)
    assert not (tmp_path / "x").exists()


# --- the tables against the run's trials -----------------------------------------------------


@pytest.mark.slow
def test_run_uses_the_cli_default_device(api_run):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert read_run_info(api_run.folder)["device"] == expected
    assert api_run.summary is not None and api_run.summary.n_trained == 32


@pytest.mark.slow
def test_trials_df_has_one_row_per_trial_with_its_numbers(api_run):
    records = [r for r in load_trials(api_run.folder) if r.status is not TrialStatus.DISCARDED]
    df = api_run.trials_df()
    assert len(df) == len(records) == 32
    assert list(df.columns) == [
        "number", *(f"params_{f}" for f in FACTORS), "seed", "state", "outcome", "best_epoch",
        "epochs", "validation_accuracy", "test_accuracy", "selection", "datetime_start",
        "datetime_complete", "duration",
    ]  # fmt: skip
    by_number = df.set_index("number")
    for r in records:
        row = by_number.loc[r.number]
        assert {f: row[f"params_{f}"] for f in FACTORS} == params_of(r.config, FACTORS)
        assert (row.seed, row.state, row.outcome) == (r.seed, "finished", r.outcome.value)
        assert (row.best_epoch, row.epochs) == (r.best_epoch, r.epochs)
        assert row.validation_accuracy == r.best_accuracy
        assert math.isnan(row.test_accuracy)  # a clean grid reads the test set for no trial
        assert row.selection == "validation"
    assert set(df["params_topology"]) == {"T1", "32"}  # as Optuna stores them


@pytest.mark.slow
def test_trials_df_of_a_leaky_run_puts_the_selection_accuracy_under_test(leaky_run):
    records = load_trials(leaky_run.folder)
    df = leaky_run.trials_df().set_index("number")
    assert len(df) == len(records) == 4
    for r in records:
        assert df.loc[r.number, "test_accuracy"] == r.best_accuracy
        assert math.isnan(df.loc[r.number, "validation_accuracy"])


@pytest.mark.slow
def test_configs_df_matches_the_table_the_run_wrote(api_run):
    (table,) = read_tables(api_run.folder)
    df = api_run.configs_df()
    assert len(df) == len(table.rows) == 16
    assert df["n"].sum() == sum(row.selection.n for row in table.rows) == 32
    means = {tuple(sorted(row.trial_numbers)): row.selection for row in table.rows}
    for _, row in df.iterrows():
        cell = means[tuple(sorted(row.numbers))]
        assert (row["mean"], row.n) == (cell.mean, cell.n)
        assert row.ci_high - row["mean"] == pytest.approx(cell.half95)
        assert row["mean"] - row.ci_low == pytest.approx(cell.half95)
    assert list(df["mean"]) == sorted(df["mean"], reverse=True)
    assert df["mean"].iloc[0] == table.winner.selection.mean


@pytest.mark.slow
def test_curves_df_is_long_with_every_epoch_of_every_trial(api_run):
    records = load_trials(api_run.folder)
    df = api_run.curves_df()
    assert len(df) == sum(3 * r.epochs for r in records) == 3 * 2 * 32
    assert set(df["metric"]) == {"train_loss", "validation_loss", "validation_accuracy"}
    first = records[0]
    accuracy = df[(df.number == first.number) & (df.metric == "validation_accuracy")]
    assert list(accuracy.sort_values("epoch")["value"]) == list(first.eval_accuracy)
    assert list(accuracy["epoch"]) == [1, 2]


@pytest.mark.slow
def test_best_is_the_winner_of_the_last_table(api_run):
    winner = read_tables(api_run.folder)[-1].winner
    best = api_run.best
    assert best.config == winner.config
    assert (best.mean, best.n, best.seeds, best.selection) == (
        winner.selection.mean, 2, (42, 43), "validation")  # fmt: skip
    assert str(best).startswith(f"{winner.label}: validation {100 * winner.selection.mean:.2f}")


@pytest.mark.slow
def test_model_is_the_final_model_and_predicts(api_run):
    loaded = api_run.model()
    assert loaded.config == api_run.best.config.replace(seed=loaded.config.seed)
    logits = loaded.model(torch.zeros(3, 64))
    assert logits.shape == (3, 10)


@pytest.mark.slow
def test_optuna_study_holds_the_same_trials(api_run):
    frame = api_run.optuna_study.trials_dataframe()
    assert sorted(frame["number"]) == sorted(api_run.trials_df()["number"])


@pytest.mark.slow
def test_status_and_report_are_the_commands(api_run):
    status = api_run.status()  # what `hpstudy status --json` prints
    assert status["study"] == "digits" and status["counts"]["complete"] == 32
    assert status["best"]["config"] == read_tables(api_run.folder)[-1].winner.config.to_dict()
    paths = api_run.report()
    assert paths.html == api_run.folder / "report.html" and paths.html.is_file()
    assert paths.related == ()  # no sibling runs beside it
    assert "<title>Study digits" in paths.html.read_text(encoding="utf-8")


@pytest.mark.slow
def test_status_of_a_cpu_run_loads_no_torch(api_run):
    # `hpstudy status` is a quick look: torch was half of its time (docs/results.md)
    code = (f"import sys; from hpstudy.runner.status import run_status; "
            f"s = run_status({str(api_run.folder)!r}); "
            "print(s['counts']['complete'], s['floor_s'] > 0, 'torch' in sys.modules)")  # fmt: skip
    assert _python_prints(code) == ["32 True False"]


# --- opening a run ---------------------------------------------------------------------------


@pytest.mark.slow
def test_open_run_reads_and_writes_nothing(api_run):
    folder = api_run.folder
    before = snapshot(folder)
    run = hs.open_run(folder)
    tables = run.trials_df(), run.configs_df(), run.curves_df()
    run.best, run.model(), run.optuna_study.trials_dataframe()
    assert snapshot(folder) == before
    assert [len(t) for t in tables] == [32, 16, 192]
    assert run.study.max_epochs == 2 and run.study.n_seeds == 2  # as it ran, from run.json


@pytest.mark.slow
def test_open_run_from_a_storage_url_and_from_a_study_name(api_run, tmp_path, monkeypatch):
    url = f"sqlite:///{api_run.folder / 'study.db'}"
    by_url = hs.open_run(url, study="digits")
    assert by_url.folder is None
    assert by_url.trials_df()["number"].tolist() == api_run.trials_df()["number"].tolist()
    assert len(by_url.configs_df()) == 16
    with pytest.raises(hs.UserError, match=r"best needs the run folder"):
        by_url.best  # noqa: B018
    with pytest.raises(hs.UserError, match="give the study name"):
        hs.open_run(url)
    with pytest.raises(hs.UserError, match="no study 'paper' in"):
        hs.open_run(url, study="paper")
    (tmp_path / "runs").symlink_to(api_run.folder.parent)  # runs/digits: `hpstudy run digits`
    monkeypatch.chdir(tmp_path)
    assert hs.open_run("digits").folder == Path("runs/digits")
    with pytest.raises(hs.UserError, match="holds study 'digits', not 'paper'"):
        hs.open_run("digits", study="paper")


def test_open_run_refuses_what_is_not_a_run_and_creates_nothing(tmp_path):
    with pytest.raises(hs.UserError, match="is not an hpstudy run folder"):
        hs.open_run(tmp_path)
    missing = tmp_path / "none.db"
    with pytest.raises(hs.UserError, match=r"holds no trials yet \(.*none\.db is missing\)"):
        hs.open_run(f"sqlite:///{missing}", study="digits")
    assert list(tmp_path.iterdir()) == []


# --- the README -----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    code = readme_example()
    assert "hs.run(" in code and "hs.open_run(" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (## Python API)", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith(("T1 ", "32 "))  # print(run.best)
    assert (tmp_path / "runs" / "digits-api" / "final_best_model.pth").is_file()
