"""A worker paused past the grace period (SIGSTOP, a sleeping laptop) is taken for dead by the
others, who end its trials and train them again; when it resumes, each write to a trial it still
believes it holds must say "lost" instead of raising, and leave the others' record as it is.

No test sleeps: the pause is an hour on a shared fake wall clock (`Store.clock`) and, on SQLite,
heartbeats dated an hour back in Optuna's table (its stale check reads the database's clock); the
other process is a second `Store` on the same storage. The runs train small slices of the real
FashionMNIST.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
from pathlib import Path

import pytest

from hpstudy.commands.progress import ProgressPrinter
from hpstudy.config.config import Config
from hpstudy.config.studyfile import load_study
from hpstudy.data.prepare import prepare_data
from hpstudy.protocols.events import EpochDone, TrialLost
from hpstudy.protocols.trainer import Trainer
from hpstudy.runner.execute import run_study
from hpstudy.runner.options import RunOptions
from hpstudy.storage import Store, TrialStatus, default_url, sqlite_file
from hpstudy.storage.search import Searcher
from hpstudy.tabulate.plans import grid_groups
from test_store import SPACE, SPLIT, make_result
from tiny_studies import write_study

QUICK = {"limit_train": 320, "limit_eval": 250}
PAUSE_S = 3600.0  # how long the paused process stays silent, on the fake clock


class Pair:
    """Two processes on one storage: `paused` holds trials, `other` takes it for dead."""

    def __init__(self, url: str, name: str = "paused") -> None:
        self.url, self.now = url, 1_000_000.0  # seconds: exact sums, whatever the pause
        self.paused = Store(url, name)
        self.paused.create_or_load()
        self.other = Store(url, name)
        self.other.create_or_load()
        self.other.worker = "elsewhere:4242"  # one test process plays both
        for store in (self.paused, self.other):
            store.clock = lambda: self.now  # one wall clock, moved by `pause`
        self.paused.beat_worker()

    def pause(self) -> int:
        """The paused process stays silent for PAUSE_S; then the other's stale check runs.
        Returns how many trials it took for dead."""
        assert self.other.fail_stale() == 0  # before the pause, every held trial is alive
        self.now += PAUSE_S
        if not self.paused.is_journal:  # Optuna's heartbeats age on the database's clock
            with contextlib.closing(sqlite3.connect(sqlite_file(self.url))) as db, db:
                db.execute("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, ?)",
                           (f"-{PAUSE_S:.0f} seconds",))  # fmt: skip
        return self.other.fail_stale()


@pytest.fixture(params=["sqlite", "journal"])
def pair(request, tmp_path: Path) -> Pair:
    if request.param == "sqlite":
        return Pair(default_url(tmp_path))
    return Pair(f"journal://{tmp_path / 'study.log'}")


def status(store: Store, trial_id: int) -> TrialStatus:
    return store.record(trial_id).status


def test_finish_and_heartbeats_of_a_lost_trial_drop_the_result(pair: Pair):
    config = Config(seed=7)
    paused = pair.paused
    (tid,) = paused.enqueue([config], protocol="grid", split=SPLIT, space=SPACE)
    assert paused.claim(tid)
    assert pair.pause() == 1
    assert status(paused, tid) is TrialStatus.INTERRUPTED
    paused.beat([tid])  # the heartbeat thread's beat, on waking: no error
    assert paused.finish(tid, make_result(config), n_train=600, digests={}) is False
    assert paused.lost == {tid: PAUSE_S} and tid not in paused.held
    paused.fail_running([tid])  # what a crash or Ctrl-C afterwards would do: no error either
    paused.discard(tid, "duplicate")
    assert paused.claim(tid) is False
    record = paused.record(tid)  # as the other process left it: interrupted, no result
    assert record.status is TrialStatus.INTERRUPTED and record.outcome is None
    assert "result" not in paused.optuna_study.trials[0].user_attrs
    assert paused.finished() == {}


def test_a_lost_search_trial_reports_labels_and_tells_nothing(pair: Pair):
    searcher = Searcher(pair.paused, SPACE, sampler_seed=0, pruner="median")
    training, unlabelled, repeat, told = (searcher.ask() for _ in range(4))
    config = Config(seed=1)
    assert training.label(config, protocol="search", split=SPLIT)
    assert training.report(1, 0.5)
    assert pair.pause() == 4
    assert training.report(2, 0.6) is False  # the pruner's "stop": the member is lost
    assert training.should_prune() is False
    assert unlabelled.label(config.replace(seed=2), protocol="search", split=SPLIT) is False
    assert repeat.tell_known(0.5, "some-key") is False
    assert pair.paused.tell(told._trial, 0.5) is False  # lost between its tag and the tell
    searcher.drop(training, "the budget is spent")
    assert not pair.paused.held
    trials = pair.paused.optuna_study.trials
    assert [t.state.name for t in trials] == ["FAIL"] * 4
    assert trials[0].intermediate_values == {1: 0.5}  # epoch 2 was not written
    assert [t.user_attrs.get("key") is not None for t in trials] == [True, False, False, False]
    assert "discarded" not in trials[0].user_attrs and "repeat_of" not in trials[2].user_attrs


def test_a_proposal_lost_before_it_is_tagged_or_sampled_is_asked_again(pair, monkeypatch):
    """Paused between Optuna's ask and the tag (or the sampling): that proposal is FAIL, never
    trained, and `ask` returns a new one."""
    from hpstudy.storage import search as search_module

    paused, other = pair.paused, pair.other
    searcher = Searcher(paused, SPACE, sampler_seed=0, pruner="median")
    for name, owner in (("_hold", Store), ("_suggest", search_module)):
        original = getattr(owner, name)
        calls = []

        def taken_first(*args, original=original, calls=calls, **kwargs):
            if not calls:
                other.fail_stale(all_running=True)  # the others took the paused one for dead
            calls.append(1)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, taken_first)
        trial = searcher.ask()
        monkeypatch.setattr(owner, name, original)
        assert status_of(paused, trial.trial_id) == "RUNNING"
        assert paused.held == {trial.trial_id}
        searcher.drop(trial, "done")
    states = [t.state.name for t in paused.optuna_study.trials]
    assert states == ["FAIL"] * 4  # two lost proposals, two dropped ones


def status_of(store: Store, trial_id: int) -> str:
    (trial,) = [t for t in store.optuna_study.trials if t._trial_id == trial_id]
    return trial.state.name


def test_a_claim_lost_before_its_tag_is_no_claim(pair, monkeypatch):
    paused, other = pair.paused, pair.other
    (tid,) = paused.enqueue([Config(seed=3)], protocol="grid", split=SPLIT, space=SPACE)
    paused._batched = False  # Optuna's per-trial claim: its tag is a second transaction
    hold = Store._hold

    def taken_first(self, trial_id, **kwargs):
        other.fail_stale(all_running=True)
        return hold(self, trial_id, **kwargs)

    monkeypatch.setattr(Store, "_hold", taken_first)
    assert paused.claim(tid) is False
    assert not paused.held and status(paused, tid) is TrialStatus.INTERRUPTED


def test_the_trainer_drops_a_lost_trials_result_and_its_weights(tmp_path: Path):
    """Training ends after the pause: the result is dropped, its weights are not cached (the
    key's record will be another trial's), one TrialLost is emitted, nothing counts as trained."""
    study = load_study(write_study(tmp_path, name="grid", protocol="grid"))
    data = prepare_data(study, RunOptions(**QUICK))
    study = study.with_data_shape(data.n_inputs, data.n_classes, data.input_shape)
    config = grid_groups(study)[0][0]
    pair = Pair(default_url(tmp_path))
    events = []
    trainer = Trainer(pair.paused, data, protocol="grid", space=study.space,
                      on_event=events.append, weights_dir=tmp_path / "weights")  # fmt: skip
    (tid,) = pair.paused.enqueue([config], protocol="grid", split=data.split, space=study.space)
    assert pair.paused.claim(tid)
    assert pair.pause() == 1
    (result,) = trainer.train_trials([(tid, config)])
    assert result.best_epoch > 0  # it trained; only its result is dropped
    lost = [e for e in events if isinstance(e, TrialLost)]
    assert lost == [TrialLost(number=0, silent_s=PAUSE_S, grace_s=pair.paused.grace_s)]
    assert trainer.trained == []
    assert not list((tmp_path / "weights").glob("*.pt"))
    assert status(pair.paused, tid) is TrialStatus.INTERRUPTED


def test_a_grid_member_taken_for_dead_stops_at_its_next_epoch(pair: Pair, tmp_path: Path):
    """Paused past the grace period during epoch 1 (the pause is on the shared fake clock): the
    other process ends its trials; at the end of that epoch the trainer sees its heartbeats were
    silent past the grace, reads the trials, and stops them instead of training 4 epochs for a
    result that will be dropped. A live process's trials are never read (`taken_over`)."""
    study = load_study(write_study(tmp_path, name="paused", protocol="grid", max_epochs=4))
    data = prepare_data(study, RunOptions(**QUICK))
    study = study.with_data_shape(data.n_inputs, data.n_classes, data.input_shape)
    configs = [c for group in grid_groups(study)[:3] for c in group]  # one seed each
    paused = pair.paused
    ids = paused.enqueue(configs, protocol="grid", split=data.split, space=study.space)
    assert all(paused.claim(t) for t in ids)
    assert paused.taken_over(ids) == set()  # beaten a moment ago: nothing read, nothing lost
    events, taken = [], []

    def on_event(event) -> None:
        if isinstance(event, EpochDone) and not taken:
            taken.append(pair.pause())
        events.append(event)

    trainer = Trainer(paused, data, protocol="grid", space=study.space, on_event=on_event)
    results = trainer.train_trials(list(zip(ids, configs, strict=True)))
    assert taken == [3]
    assert [len(r.train_loss) for r in results] == [1, 1, 1]  # stopped at once, not at 4
    assert [e.epoch for e in events if isinstance(e, EpochDone)] == [1]
    assert len([e for e in events if isinstance(e, TrialLost)]) == 3 and trainer.trained == []
    assert {status(paused, t) for t in ids} == {TrialStatus.INTERRUPTED}


def test_a_lost_trial_is_one_line_even_when_quiet():
    stream = io.StringIO()
    printer = ProgressPrinter(stream, quiet=True)
    printer(TrialLost(number=17, silent_s=95.4, grace_s=30))
    printer(TrialLost(number=18, silent_s=2.0, grace_s=30))  # not paused as far as it knows
    assert stream.getvalue().splitlines() == [
        "trial 17 was given up while this process was paused (no heartbeat for 95 s, grace "
        "30 s); its result is dropped, the study trains it again as another trial",
        "trial 18 was given up by another process that took this one for dead; its result is "
        "dropped, the study trains it again as another trial",
    ]


def taking_all_for_dead(url_of, study_name: str):
    """An on_event hook: at the first epoch, another process (a second Store) takes every
    trial this one holds for dead, as when this process has been paused past the grace."""
    events: list = []
    taken: list[int] = []  # how many trials the other process took, once

    def on_event(event) -> None:
        if isinstance(event, EpochDone) and not taken:
            taken.append(Store(url_of(), study_name).fail_stale(all_running=True))
        events.append(event)

    return on_event, events, taken


def comparable(table) -> dict:
    """A table as data, without the trial numbers (the retrained trials have new ones)."""
    d = table.to_dict()
    for row in d["rows"]:
        row.pop("trial_numbers")
    return d


def one_finished_per_key(run_dir: Path) -> list:
    store = Store(default_url(run_dir), run_dir.name)
    records = store.records()
    finished = [r for r in records if r.status is TrialStatus.FINISHED]
    assert len(finished) == len({r.key for r in finished})
    return records


@pytest.mark.slow
def test_a_grid_taken_for_dead_mid_training_ends_as_if_uninterrupted(tmp_path: Path):
    study = load_study(write_study(tmp_path, name="grid", protocol="grid"))
    reference = run_study(study, RunOptions(out=str(tmp_path / "reference"), **QUICK))
    run_dir = tmp_path / "grid"
    on_event, events, taken = taking_all_for_dead(lambda: default_url(run_dir), "grid")
    summary = run_study(study, RunOptions(out=str(run_dir), **QUICK), on_event=on_event)
    lost = [e for e in events if isinstance(e, TrialLost)]
    assert taken[0] > 0 and len(lost) == taken[0]
    records = one_finished_per_key(run_dir)
    interrupted = [r for r in records if r.status is TrialStatus.INTERRUPTED]
    assert sorted(e.number for e in lost) == [r.number for r in interrupted]
    assert summary.n_trained == reference.n_trained == 8
    assert [comparable(t) for t in summary.tables] == [comparable(t) for t in reference.tables]


@pytest.mark.slow
def test_a_search_taken_for_dead_mid_round_ends_as_if_uninterrupted(tmp_path: Path):
    """The pruner's report on the lost trials stops them (it raised before); their
    configurations are free again and the search still trains the whole space once."""
    extra = '[search]\nn_trials = 8\nbatch = 3\npruner = "none"\nconfirm_top = 0\n'
    study = load_study(write_study(tmp_path, name="search", protocol="search",
                                   selection="validation", extra=extra))  # fmt: skip
    reference = run_study(study, RunOptions(out=str(tmp_path / "reference"), **QUICK))
    run_dir = tmp_path / "search"
    on_event, events, taken = taking_all_for_dead(lambda: default_url(run_dir), "search")
    summary = run_study(study, RunOptions(out=str(run_dir), **QUICK), on_event=on_event)
    lost = [e for e in events if isinstance(e, TrialLost)]
    assert taken[0] == len(lost) == 3  # the first round
    first = [e.epoch for e in events if isinstance(e, EpochDone) and e.stage == "search round 1"]
    assert first == [1]  # its members stopped at the first report the store refused
    records = one_finished_per_key(run_dir)
    assert sum(r.status is TrialStatus.FINISHED for r in records) == 8
    (table,), (want,) = summary.tables, reference.tables
    # Rows of equal score keep the order their configurations were proposed in: compare by
    # configuration.
    got, expected = comparable(table), comparable(want)
    assert sorted(got.pop("rows"), key=str) == sorted(expected.pop("rows"), key=str)
    assert got == expected
