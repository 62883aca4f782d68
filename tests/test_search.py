"""The search protocol's budget (distinct configurations, repeats told not trained, the space
exhausted, a bound on repeats) and its confirmation round, on small slices of the real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpstudy.config.studyfile import load_study
from hpstudy.errors import UserError
from hpstudy.predict.modelfile import load_model
from hpstudy.runner.execute import run_study
from hpstudy.runner.options import RunOptions
from hpstudy.runner.outputs import recompute_tables
from hpstudy.stats.tables import mean_ci
from hpstudy.storage import TrialStatus
from hpstudy.storage.rundir import MODEL_FILE, open_run
from tiny_studies import stick_sampler_on, write_study

QUICK = {"limit_train": 320, "limit_eval": 250}
SPACE = 2 * 2 * 2  # tiny_studies' space


def run_search(tmp_path: Path, *, confirm_top: int = 0, confirm_seeds: int = 2, n_seeds: int = 1,
               max_epochs: int = 2, options: dict | None = None, **search):  # fmt: skip
    search = {"batch": 3, "pruner": '"none"', **search}
    extra = "[search]\n" + "".join(f"{k} = {v}\n" for k, v in search.items())
    extra += f"confirm_top = {confirm_top}\nconfirm_seeds = {confirm_seeds}\n"
    study = load_study(write_study(tmp_path, name="search", protocol="search", n_seeds=n_seeds,
                                   max_epochs=max_epochs, selection="validation",
                                   extra=extra))  # fmt: skip
    return run_study(study, RunOptions(out=str(tmp_path / "search"), **QUICK, **(options or {})))


def n_told(run_dir: Path) -> int:
    store = open_run(run_dir)
    return sum("repeat_of" in t.user_attrs for t in store._optuna.get_trials())


def test_repeated_proposals_spend_no_budget(tmp_path: Path):
    summary = run_search(tmp_path, n_trials=7)
    records = open_run(summary.run_dir).records()
    finished = [r for r in records if r.status is TrialStatus.FINISHED]
    assert len(finished) == len({r.key for r in finished}) == 7 == summary.n_trained
    assert not [r for r in records if r.status is TrialStatus.DISCARDED]
    (table,) = summary.tables
    assert len(table.rows) == 7 and "budget of 7 distinct configurations was spent" in table.rule


@pytest.mark.slow  # 1.3 to 2.2 s here: the fast tier stays under a minute
def test_a_space_smaller_than_the_budget_ends_exhausted(tmp_path: Path):
    summary = run_search(tmp_path, n_trials=20)
    (table,) = summary.tables
    assert len(table.rows) == SPACE == summary.n_trained
    assert "the space was exhausted (all 8 configurations)" in table.rule
    assert n_told(summary.run_dir) > 0  # TPE proposed known points: told, not trained
    again = run_search(tmp_path, n_trials=20)
    assert again.n_trained == 0 and [t.to_dict() for t in again.tables] == [table.to_dict()]


@pytest.mark.slow  # 1.3 to 2.2 s here: the fast tier stays under a minute
def test_the_repeat_bound_stops_a_sampler_that_only_repeats(tmp_path: Path, monkeypatch):
    first = run_search(tmp_path, n_trials=2)
    told_before = n_told(first.run_dir)
    known = first.tables[0].rows[0].config
    stick_sampler_on(monkeypatch, known, max_repeats=5)
    again = run_search(tmp_path, n_trials=6)
    assert again.n_trained == 0
    assert n_told(again.run_dir) - told_before == 5
    assert "ended after 2 of 6 configurations" in again.tables[0].rule
    assert "repeated known ones 5 times in a row" in again.tables[0].rule


@pytest.mark.slow  # 1.3 to 2.2 s here: the fast tier stays under a minute
def test_confirmation_retrains_the_top_with_new_seeds(tmp_path: Path):
    summary = run_search(tmp_path, n_trials=4, confirm_top=2, confirm_seeds=3)
    search, confirmed = summary.tables
    assert summary.n_trained == 4 + 2 * 3
    assert [t.name for t in summary.tables] == ["search", "confirmed"]
    by_number = {r.number: r for r in open_run(summary.run_dir).records()}
    tests = open_run(summary.run_dir).test_accuracies()
    assert all(row.test is None for row in search.rows)  # the search never reads the test set
    top = {r.label: r for r in search.rows[:2]}
    assert {r.label for r in confirmed.rows} == set(top)
    gaps = []
    for row in confirmed.rows:
        records = [by_number[n] for n in row.trial_numbers]
        assert [r.seed for r in records] == [1042, 1043, 1044]
        assert all(r.status is TrialStatus.FINISHED for r in records)
        assert all(r.config.replace(seed=42) == top[row.label].config for r in records)
        assert row.selection == mean_ci([r.best_accuracy for r in records])
        # Selection was on validation; each confirming trial then read the test set once.
        assert row.test == mean_ci([tests[r.key] for r in records])
        gaps.append(top[row.label].selection.mean - row.selection.mean)
    assert f"{100 * mean_ci(gaps).mean:+.2f} pp on average" in confirmed.rule
    best = max(confirmed.rows, key=lambda r: r.selection.mean)
    assert confirmed.winner == best
    model = load_model(summary.run_dir / MODEL_FILE)
    assert model.config.seed in (1042, 1043, 1044)
    assert model.config.replace(seed=42) == top[best.label].config
    recomputed = recompute_tables(summary.run_dir)
    assert [t.to_dict() for t in recomputed] == [t.to_dict() for t in summary.tables]
    again = run_search(tmp_path, n_trials=4, confirm_top=2, confirm_seeds=3)
    assert again.n_trained == 0
    assert [t.to_dict() for t in again.tables] == [t.to_dict() for t in summary.tables]


def test_a_spent_time_budget_ends_the_search_but_not_the_confirmation(tmp_path: Path):
    summary = run_search(tmp_path, n_trials=7, confirm_top=1, time_budget_s=0.001)
    search, confirmed = summary.tables
    assert len(search.rows) == 3 and summary.n_trained == 3 + 2  # one round, then 1 x 2 seeds
    assert "ended after 3 of 7 configurations: the time budget of 0.001 s" in search.rule
    assert [len(row.trial_numbers) for row in confirmed.rows] == [2]


def test_time_budget_on_the_command_line_overrides_the_study_file(tmp_path: Path, capsys):
    from hpstudy import cli

    extra = "[search]\nbatch = 2\nn_trials = 6\nconfirm_top = 0\ntime_budget_s = 3600\n"
    path = write_study(tmp_path, name="timed", protocol="search", selection="validation",
                       extra=extra)  # fmt: skip
    args = ["run", str(path), "--out", str(tmp_path / "timed"), "--no-report", "--device", "cpu",
            "--limit-train", "320", "--limit-eval", "250"]  # fmt: skip
    assert cli.main([*args, "--time-budget", "0.001"]) == 0
    out = capsys.readouterr().out
    assert "ended after 2 of 6 configurations: the time budget of 0.001 s" in out
    # run.json keeps the override, so the report states the budget the run had; the study
    # file's own epochs are no quick-try limit.
    from hpstudy.report.loader import load_run

    view = load_run(tmp_path / "timed")
    assert "the time budget of 0.001 s" in view.tables[0].rule
    assert view.limits == {"limit_train": 320, "limit_eval": 250}


def test_the_time_budget_keeps_back_the_confirmation_at_the_measured_rate(monkeypatch):
    from hpstudy.protocols import search

    now = [100.0]
    monkeypatch.setattr(search.time, "monotonic", lambda: now[0])
    budget = search.TimeBudget(60.0)
    assert budget.allows(10**6, 10**6)  # nothing measured yet: the first round always runs
    now[0] += 20.0
    budget.spent(20.0, model_epochs=40)  # 0.5 s per model-epoch, 40 s left
    assert budget.allows(40, 40) and not budget.allows(41, 40) and not budget.allows(0, 81)
    assert search.TimeBudget(None).allows(10**9, 10**9)


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ("time_budget_s = 0", "search.time_budget_s: must be a positive number, got 0"),
        ("confirm_top = -1", "search.confirm_top: must be an integer >= 0, got -1"),
        ("confirm_seeds = 1", "search.confirm_seeds: must be an integer >= 2, got 1"),
        ("confirm_seeds = 'x'", "search.confirm_seeds: must be an integer >= 2, got 'x'"),
    ],
)
def test_bad_confirmation_values_are_one_line_errors(tmp_path: Path, search: str, message: str):
    path = write_study(tmp_path, protocol="search", extra=f"[search]\n{search}\n")
    with pytest.raises(UserError) as caught:
        load_study(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    load_study(write_study(tmp_path, protocol="search",
                           extra="[search]\nconfirm_top = 0\nconfirm_seeds = 1\n"))  # fmt: skip


def test_the_report_shows_how_much_the_search_score_overstated(tmp_path: Path):
    from hpstudy.report.loader import load_run
    from hpstudy.report.sections import stage_section

    summary = run_search(tmp_path, n_trials=3, confirm_top=2, confirm_seeds=2)
    search, confirmed = summary.tables
    (table,) = [b for b in stage_section(load_run(summary.run_dir)) if b.key == "confirmation"]
    gaps = [100 * (next(s for s in search.rows if s.label == r.label).selection.mean
                   - r.selection.mean) for r in confirmed.rows]  # fmt: skip
    assert [row[-1] for row in table.rows] == [f"{g:+.2f}" for g in gaps]
    assert f"overstated the confirmed score by {sum(gaps) / len(gaps):+.2f} pp" in table.notes[0]


def test_importances_leave_out_repeats_told_their_known_result(tmp_path):
    import optuna

    from hpstudy.storage import Store, default_url
    from hpstudy.storage.importance import param_importances
    from hpstudy.storage.search import REPEAT_ATTR

    store = Store(default_url(tmp_path), "imp")
    store.create_or_load()
    categorical = optuna.distributions.CategoricalDistribution
    dists = {"lr": categorical([0.01, 0.1]), "optimizer": categorical(["sgd", "adam"])}
    points = [(0.01, "sgd", 0.80), (0.1, "sgd", 0.85), (0.01, "adam", 0.60), (0.1, "adam", 0.62),
              (0.01, "sgd", 0.81), (0.1, "adam", 0.63)]  # fmt: skip
    trials = [optuna.trial.create_trial(params={"lr": lr, "optimizer": o}, distributions=dists,
                                        value=v) for lr, o, v in points]  # fmt: skip
    repeat = optuna.trial.create_trial(params={"lr": 0.1, "optimizer": "adam"}, distributions=dists,
                                       value=0.99, user_attrs={REPEAT_ATTR: "k"})  # fmt: skip
    store._optuna.add_trials([*trials, repeat])
    found = param_importances(store, ["lr", "optimizer"])
    alone = optuna.create_study(direction="maximize")
    alone.add_trials(trials)
    want = optuna.importance.get_param_importances(
        alone,
        evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
        params=["lr", "optimizer"],
    )
    assert found.values == pytest.approx(dict(want))


def test_confirming_trials_read_the_test_set_with_their_own_weights(tmp_path, monkeypatch):
    """More confirming trials than the weights kept in memory: none is retrained to read its
    test accuracy (a retrained copy matches only up to float32 rounding)."""
    from hpstudy.protocols import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "MEMORY_WEIGHTS", 1)
    retrained = []
    weights_of = trainer_module.Trainer.weights_of

    def spy(self, record):
        state_dict, again = weights_of(self, record)
        retrained.append(again)
        return state_dict, again

    monkeypatch.setattr(trainer_module.Trainer, "weights_of", spy)
    summary = run_search(tmp_path, n_trials=4, confirm_top=2, confirm_seeds=3)
    assert len(open_run(summary.run_dir).test_accuracies()) == 2 * 3
    assert retrained and not any(retrained)


@pytest.mark.slow  # two tiny searches of 16 trials, 6 epochs (about 10 s here)
def test_populations_together_prune_as_one_after_another(tmp_path: Path):
    """The median pruner judges a member against the trials finished so far. With the round's
    two populations advancing together (`--concurrent-populations`, CUDA's default) none has
    finished when the other's epochs are judged, so the search pruned other trials than with one
    population after another; it must not depend on that choice."""

    def trials(together: bool) -> list[tuple]:
        folder = tmp_path / str(together)
        folder.mkdir()
        options = {"concurrent_populations": together}
        summary = run_search(folder, n_trials=8, batch=8, pruner='"median"', n_seeds=2,
                             max_epochs=6, options=options)  # fmt: skip
        records = open_run(summary.run_dir).records()
        return sorted((r.key, r.outcome, len(r.eval_accuracy)) for r in records)

    one_after_another = trials(False)
    assert any(outcome.value == "pruned" for _, outcome, _ in one_after_another)
    assert trials(True) == one_after_another
