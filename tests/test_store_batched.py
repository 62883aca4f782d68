"""Many trials per transaction (`storage.batched`): the same rows as Optuna's per-trial methods,
claims that never hand one trial to two processes, SQLite in WAL mode, and the Trainer storing
each population's results in one transaction. Results come from a real tiny run (FashionMNIST).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpstudy import engine
from hpstudy.config.config import Config
from hpstudy.config.studyfile import load_study
from hpstudy.data.prepare import prepare_data
from hpstudy.engine.results import Outcome
from hpstudy.protocols.trainer import Trainer
from hpstudy.runner.options import RunOptions
from hpstudy.storage import Store, TrialStatus, batched, default_url, sqlite_file
from hpstudy.tabulate.plans import grid_groups
from test_store import SPACE, SPLIT
from tiny_studies import hpstudy_cmd, subprocess_env, write_study

QUICK = {"limit_train": 320, "limit_eval": 250}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny grid (T1, T2 x SGD, Adam x two learning rates: two populations), its data and
    the results of one real training of it."""
    folder = tmp_path_factory.mktemp("tiny")
    study = load_study(write_study(folder, name="grid", protocol="grid"))
    data = prepare_data(study, RunOptions(**QUICK))
    study = study.with_data_shape(data.n_inputs, data.n_classes, data.input_shape)
    configs = [c for group in grid_groups(study) for c in group]
    results = engine.train(configs, data.train, data.evaluation, **data.engine_options())
    return study, data, configs, results


def open_store(url_or_folder, *, batched_writes: bool, name: str = "tiny") -> Store:
    url = url_or_folder if isinstance(url_or_folder, str) else default_url(url_or_folder)
    store = Store(url, name)
    store.create_or_load()
    store._batched = store._batched and batched_writes
    return store


def heartbeat_rows(store: Store, trial_ids: list[int]) -> set[int]:
    """Those of `trial_ids` that have a row in Optuna's heartbeat table."""
    with store._rdb.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT trial_id FROM trial_heartbeats")
        return {row[0] for row in rows} & set(trial_ids)


def test_optunas_private_helpers_used_for_batching_are_there(tmp_path: Path):
    """Fails on an Optuna upgrade that moved them: the store would still work, one trial per
    transaction (seconds per grid on SQLite), so the change must be seen and followed."""
    store = open_store(tmp_path, batched_writes=True)
    assert batched.supported(store._rdb) and store._batched
    journal = Store(f"journal://{tmp_path / 'study.log'}", "tiny")
    assert not journal._batched  # the journal file has its own path: Optuna's methods


def test_sqlite_runs_in_wal_mode_with_normal_sync(tmp_path: Path):
    store = open_store(tmp_path, batched_writes=True)
    with contextlib.closing(sqlite3.connect(sqlite_file(store.url))) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # kept in the file
    with store._rdb.engine.connect() as connection:  # per connection: 1 is NORMAL (FULL is 2)
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1


def store_everything(store: Store, tiny) -> tuple[list[int], list[bool]]:
    """Enqueue, claim, beat and finish the tiny grid's trials, one result pruned and one
    diverged; the last one is ended first by another process (it took this one for dead), so
    its result is dropped."""
    study, data, configs, results = tiny
    diverged = [*results[1].train_loss[:-1], float("nan")]
    results = [dataclasses.replace(results[0], outcome=Outcome.PRUNED),
               dataclasses.replace(results[1], outcome=Outcome.DIVERGED, train_loss=diverged),
               *results[2:]]  # fmt: skip
    ids = store.enqueue(configs, protocol="grid", split=data.split, space=study.space)
    assert store.claim_many([[tid] for tid in ids], limit=len(ids)) == ids
    store.beat(ids)
    Store(store.url, store.study_name)._rdb.set_trial_state_values(ids[-1], TrialState.FAIL)
    done = store.finish_many(list(zip(ids, results, strict=True)), n_train=len(data.train.y),
                             digests=data.digests)  # fmt: skip
    return ids, done


def assert_same_rows(per_trial: Store, batch: Store, tiny) -> None:
    """Both stores hold the same trials, field by field, but for trial ids and dates."""
    ids_a, done_a = store_everything(per_trial, tiny)
    ids_b, done_b = store_everything(batch, tiny)
    assert done_a == done_b == [True] * (len(ids_b) - 1) + [False]
    assert per_trial.lost.keys() == {ids_a[-1]} and batch.lost.keys() == {ids_b[-1]}
    assert not per_trial.held and not batch.held

    def undated(record):
        assert record.datetime_start is not None
        assert (record.datetime_complete is None) == (record.status is TrialStatus.RUNNING)
        return dataclasses.replace(record, trial_id=0, datetime_start=None, datetime_complete=None)

    expected, got = per_trial.records(), batch.records()
    assert [r.status for r in got].count(TrialStatus.FINISHED) == len(ids_b) - 1
    # Compared as text: a diverged loss reads back as nan, which equals no other nan.
    assert [repr(undated(r)) for r in got] == [repr(undated(r)) for r in expected]
    assert [r.eval_correct for r in got] == [r.eval_correct for r in expected]  # compare=False
    for a, b in zip(per_trial.frozen_trials(), batch.frozen_trials(), strict=True):
        assert (a.number, a.state, a.values, a.params, a.distributions, a.user_attrs,
                a.system_attrs, a.intermediate_values) == (
                b.number, b.state, b.values, b.params, b.distributions, b.user_attrs,
                b.system_attrs, b.intermediate_values)  # fmt: skip
    assert heartbeat_rows(per_trial, ids_a) == set(ids_a)
    assert heartbeat_rows(batch, ids_b) == set(ids_b)
    read_back = batch.records_of(ids_b[::-1])  # one session, in the order asked
    assert [repr(r) for r in read_back] == [repr(batch.record(tid)) for tid in ids_b[::-1]]
    assert [r.eval_correct for r in read_back] == [r.eval_correct for r in got[::-1]]


@pytest.mark.slow  # 2 to 3 s: a real tiny training
def test_batched_writes_store_what_per_trial_writes_stored(tiny, tmp_path: Path):
    for mode in ("per_trial", "batched"):
        (tmp_path / mode).mkdir()
    assert_same_rows(open_store(tmp_path / "per_trial", batched_writes=False),
                     open_store(tmp_path / "batched", batched_writes=True), tiny)  # fmt: skip


@pytest.mark.postgres
def test_batched_writes_store_what_per_trial_writes_stored_on_postgresql(tiny):
    from test_workers_postgres import postgres_server

    with postgres_server() as url:
        assert_same_rows(open_store(url, batched_writes=False, name="per_trial"),
                         open_store(url, batched_writes=True, name="batched"), tiny)  # fmt: skip


def test_a_batched_claim_takes_each_trial_once(tmp_path: Path):
    """Two processes claim the same trials: each trial goes to one of them; of a key's two
    WAITING trials (a race enqueued both) the first one still waiting is taken."""
    first = open_store(tmp_path, batched_writes=True)
    second = open_store(tmp_path, batched_writes=True)
    second.worker = "elsewhere:4242"
    configs = [Config(seed=s) for s in (1, 2, 3, 1)]
    ids = first.enqueue(configs, protocol="grid", split=SPLIT, space=SPACE)
    assert first.claim_many([[ids[0], ids[3]]], limit=1) == [ids[0]]
    assert second.claim_many([[ids[0], ids[3]], [ids[1]], [ids[2]]], limit=2) == [ids[3], ids[1]]
    assert first.claim_many([[ids[1]], [ids[2]]], limit=5) == [ids[2]]
    assert first.held == {ids[0], ids[2]} and second.held == {ids[3], ids[1]}
    workers = {t._trial_id: t.user_attrs["worker"] for t in first.frozen_trials()}
    assert workers == {ids[0]: first.worker, ids[1]: second.worker, ids[2]: first.worker,
                       ids[3]: second.worker}  # fmt: skip
    assert heartbeat_rows(first, ids) == set(ids)


@pytest.mark.slow
def test_the_trainer_stores_each_population_in_one_transaction(tiny, tmp_path, monkeypatch):
    study, data, configs, _ = tiny
    store = open_store(tmp_path, batched_writes=True)
    calls = []
    finish_many = Store.finish_many

    def counted(self, results, **kwargs):
        calls.append(len(results))
        return finish_many(self, results, **kwargs)

    monkeypatch.setattr(Store, "finish_many", counted)
    trainer = Trainer(store, data, protocol="grid", space=study.space)
    records = trainer.ensure(configs)
    n_populations = len({c.layer_sizes for c in configs})
    assert calls == [len(configs) // n_populations] * n_populations
    assert all(r.status is TrialStatus.FINISHED for r in records.values())
    assert sorted(r.trial_id for r in trainer.trained) == sorted(r.trial_id for r in
                                                                 records.values())  # fmt: skip
    assert not store.held


def _journal_mode(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("PRAGMA journal_mode").fetchone()[0]


@contextlib.contextmanager
def _read_only_copy(folder: Path, tmp_path: Path):
    """`folder` copied onto a read-only file system (a tmpfs remounted read-only), or a skip
    where this machine may not mount one."""
    import shutil

    mount = tmp_path / "readonly"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)], capture_output=True,
                      check=False).returncode:  # fmt: skip
        pytest.skip("this machine cannot mount a tmpfs (not root)")
    try:
        shutil.copytree(folder, mount / folder.name)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount / folder.name
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


@pytest.mark.slow  # a tiny run (2 to 3 s)
def test_a_finished_run_leaves_one_file_that_opens_on_read_only_media(tmp_path: Path):
    """A run writes in WAL mode, then folds the log into study.db and returns it to a rollback
    journal: no study.db-wal to forget when copying the folder, and readers (report, status) of
    an archived, read-only copy can open it, which they cannot in WAL mode."""
    from hpstudy.runner.execute import run_study
    from hpstudy.storage.rundir import open_run

    study = load_study(write_study(tmp_path, name="grid", protocol="grid"))
    run_dir = tmp_path / "run"
    summary = run_study(study, RunOptions(out=str(run_dir), **QUICK))
    db = run_dir / "study.db"
    assert _journal_mode(db) == "delete" and not db.with_name("study.db-wal").exists()
    assert len(open_run(run_dir).records()) == summary.n_trained == 8
    assert _journal_mode(db) == "delete"  # a reader left it as it found it
    with _read_only_copy(run_dir, tmp_path) as archived:  # read as a user would, by a command
        shown = subprocess.run(hpstudy_cmd("status", str(archived), "--json"), env=subprocess_env(),
                               capture_output=True, text=True, check=False)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert len(json.loads(shown.stdout)["trials"]) == 8


@pytest.mark.slow  # waits 2 s for the other writer on purpose
def test_a_batched_finish_never_overwrites_a_trial_another_process_ended(
    tiny, tmp_path, monkeypatch
):
    """Another process ends the trial (it took this one for dead) while this one finishes it:
    one of the two wins, whole. SQLite (pysqlite) begins a transaction at the first write, not
    at a read, so a finish that reads the trial's state and then writes could overwrite the
    other's FAIL with its result: the key finished here and trained again there."""
    import threading

    study, data, configs, results = tiny
    store = open_store(tmp_path, batched_writes=True)
    ids = store.enqueue(configs[:1], protocol="grid", split=data.split, space=study.space)
    assert store.claim_many([ids], limit=1) == ids
    models = batched._models()
    find, ended_there = models.TrialModel.find_or_raise_by_id, []

    def end_there():  # the other process ends it, as an atomic conditional write
        with contextlib.closing(sqlite3.connect(sqlite_file(store.url), timeout=60)) as db:
            ended = db.execute("UPDATE trials SET state = 'FAIL' WHERE trial_id = ? AND state "
                               "IN ('RUNNING', 'WAITING')", (ids[0],)).rowcount  # fmt: skip
            db.commit()
        ended_there.append(ended == 1)

    there = threading.Thread(target=end_there)

    def find_then_other_writes(trial_id, session, for_update=False):
        trial = find(trial_id, session, for_update=for_update)
        if not there.is_alive() and not ended_there:  # once, while this finish is under way
            there.start()
            there.join(timeout=2)  # done at once unless this finish holds the write lock
        return trial

    monkeypatch.setattr(models.TrialModel, "find_or_raise_by_id",
                        staticmethod(find_then_other_writes))  # fmt: skip
    done = store.finish_many([(ids[0], results[0])], n_train=len(data.train.y),
                             digests=data.digests)  # fmt: skip
    monkeypatch.undo()
    there.join()
    finished = store.record(ids[0]).status is TrialStatus.FINISHED
    assert done == [finished] and ended_there == [not finished]
    assert (ids[0] in store.lost) == (not finished)


def test_taking_a_trial_for_dead_never_overwrites_a_finish(tiny, tmp_path, monkeypatch):
    """The other direction: this process takes another's trial for dead (fail_stale) while that
    one finishes it. Optuna's set_trial_state_values reads the state and then writes; on SQLite
    the finish could commit in between and its result be overwritten by FAIL, although the
    finishing process counts it as trained (and its protocol goes on with that result) while
    the key is trained again elsewhere."""
    import threading

    study, data, configs, results = tiny
    finishing = open_store(tmp_path, batched_writes=True)
    ids = finishing.enqueue(configs[:1], protocol="grid", split=data.split, space=study.space)
    assert finishing.claim_many([ids], limit=1) == ids
    taking = open_store(tmp_path, batched_writes=True)
    finished_there: list[list[bool]] = []

    def finish_there():
        finished_there.append(finishing.finish_many([(ids[0], results[0])],
                                                    n_train=len(data.train.y),
                                                    digests=data.digests))  # fmt: skip

    there = threading.Thread(target=finish_there)
    models = batched._models()
    find = models.TrialModel.find_or_raise_by_id

    def find_then_other_writes(trial_id, session, for_update=False):
        trial = find(trial_id, session, for_update=for_update)
        if (
            threading.current_thread() is threading.main_thread()
            and not there.is_alive()
            and not finished_there
        ):  # once, while taking it for dead is under way
            there.start()
            there.join(timeout=2)  # done at once unless this write holds the lock
        return trial

    monkeypatch.setattr(models.TrialModel, "find_or_raise_by_id",
                        staticmethod(find_then_other_writes))  # fmt: skip
    n_failed = taking.fail_stale(all_running=True)
    if not finished_there and not there.is_alive():
        there.start()  # the write took no read first: the finish comes after it
    there.join()
    monkeypatch.undo()
    finished = taking.record(ids[0]).status is TrialStatus.FINISHED
    assert finished_there == [[finished]] and n_failed == (not finished)
