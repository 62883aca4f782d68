"""The store on Optuna's SQLite storage: identity, atomic claims, records, stale trials."""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

from hpstudy.config.config import Config
from hpstudy.config.studyfile import load_study
from hpstudy.engine.results import Outcome, TrialResult
from hpstudy.errors import UserError
from hpstudy.storage import (
    Store,
    TrialStatus,
    default_url,
    redact_args,
    redact_url,
    sqlite_file,
    trial_key,
)
from hpstudy.storage.rundir import RUN_FILE, load_trials, open_run

SPLIT = {"selection": "test", "n_train": 600}
SPACE = load_study("paper").space


def make_result(config: Config, accuracies=(0.5, 0.7, 0.6), outcome=Outcome.COMPLETE):
    n = len(accuracies)
    return TrialResult(
        config=config, outcome=outcome, train_loss=[1.0] * n, eval_loss=[0.9] * n,
        eval_accuracy=list(accuracies), best_epoch=max(range(n), key=lambda i: accuracies[i]) + 1,
        wall_s=0.25, device="cpu", dtype="float32",
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Store:
    st = Store(default_url(tmp_path), "unit", grace_s=1, heartbeat_s=1)
    assert st.create_or_load() is True
    assert Store(default_url(tmp_path), "unit").create_or_load() is False  # exactly one creator
    return st


def test_identity_is_config_seed_and_split():
    a = Config(topology="T4", seed=1)
    assert trial_key(a, SPLIT) == trial_key(Config(topology=[256, 128, 64], seed=1), SPLIT)
    assert trial_key(a, SPLIT) != trial_key(a.replace(seed=2), SPLIT)
    assert trial_key(a, SPLIT) != trial_key(a, {**SPLIT, "n_train": 601})


def test_enqueue_claim_finish_roundtrip(store: Store):
    config = Config(topology="T2", optimizer="adam", lr=0.005, seed=7)
    (tid,) = store.enqueue([config], protocol="staged", split=SPLIT, space=SPACE)
    (record,) = store.records()
    assert record.status is TrialStatus.WAITING and record.config == config
    assert store.claim(tid) is True
    assert store.claim(tid) is False  # a second claim of the same trial fails
    store.finish(tid, make_result(config), n_train=600, digests={"f": "abc"})
    (record,) = store.records()
    assert record.status is TrialStatus.FINISHED and record.outcome is Outcome.COMPLETE
    assert (record.seed, record.best_epoch, record.best_accuracy) == (7, 2, 0.7)
    assert record.eval_accuracy == (0.5, 0.7, 0.6) and record.epochs == 3
    assert record.versions["torch"] == torch.__version__ and record.data_digests == {"f": "abc"}
    assert record.protocol == "staged" and record.split == SPLIT and record.n_train == 600
    trial = store._optuna.trials[0]
    assert trial.state == TrialState.COMPLETE and trial.value == 0.7
    assert trial.params == {"topology": "T2", "optimizer": "adam", "lr": 0.005,
                            "activation": "relu"}  # fmt: skip
    assert list(store.finished()) == [record.key]


def test_diverged_losses_are_stored_as_nan(store: Store):
    config = Config(lr=0.1)
    (tid,) = store.enqueue([config], protocol="grid", split=SPLIT, space=SPACE)
    store.claim(tid)
    result = make_result(config, (0.3, 0.1), outcome=Outcome.DIVERGED)
    result.train_loss[1] = float("nan")
    store.finish(tid, result, n_train=600, digests={})
    (record,) = store.records()
    assert record.outcome is Outcome.DIVERGED and not record.is_usable
    assert math.isnan(record.train_loss[1]) and record.best_accuracy == 0.3


def age_heartbeats(url: str, seconds: float) -> None:
    """Date every Optuna heartbeat `seconds` back (its stale check reads the database's clock):
    a silence that long, without sleeping."""
    with contextlib.closing(sqlite3.connect(sqlite_file(url))) as db, db:
        db.execute("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, ?)",
                   (f"-{seconds:.0f} seconds",))  # fmt: skip


def other_process(url: str) -> Store:
    """A second Store on the same storage, as another worker process would open it."""
    other = Store(url, "unit", grace_s=1, heartbeat_s=1)
    other.create_or_load()
    other.worker = "elsewhere:4242"  # one test process plays both
    return other


def test_stale_running_trials_of_another_process_are_interrupted(store: Store):
    other = other_process(store.url)
    ids = store.enqueue([Config(seed=s) for s in range(3)], protocol="grid", split=SPLIT,
                        space=SPACE)  # fmt: skip
    assert store.claim(ids[0]) and other.claim(ids[1])
    age_heartbeats(store.url, 3600)  # both silent for an hour (grace: 1 s) ...
    store.beat([ids[0]])  # ... then this process beats its own: trial 0 is alive again
    assert store.fail_stale() == 1  # the other process's trial 1 is taken for dead
    statuses = [r.status for r in store.records()]
    assert statuses == [TrialStatus.RUNNING, TrialStatus.INTERRUPTED, TrialStatus.WAITING]
    assert store.fail_stale(all_running=True) == 1  # the folder's lock: its own trials too
    assert store.records()[0].status is TrialStatus.INTERRUPTED


def test_a_process_never_takes_its_own_held_trial_for_dead(store: Store):
    """A process resumed after a pause calls fail_stale before its heartbeat thread beats
    again: its own trials' heartbeats are old, but it is alive and holds them."""
    other = other_process(store.url)
    (tid,) = store.enqueue([Config(seed=1)], protocol="grid", split=SPLIT, space=SPACE)
    assert store.claim(tid)
    age_heartbeats(store.url, 3600)
    assert store.fail_stale() == 0 and store.record(tid).status is TrialStatus.RUNNING
    assert other.fail_stale() == 1  # for any other process it is dead
    assert store.record(tid).status is TrialStatus.INTERRUPTED


def test_killed_between_result_and_state_is_interrupted_not_finished(store: Store):
    """finish() writes the result, then the state: a kill between the two leaves a RUNNING
    trial with a result, which fail_stale must turn into an interrupted one (trained again)."""
    config = Config(seed=7)
    (tid,) = store.enqueue([config], protocol="grid", split=SPLIT, space=SPACE)
    assert store.claim(tid)
    payload_only = make_result(config)
    store._rdb.set_trial_user_attr(tid, "result", {"outcome": payload_only.outcome.value})
    assert store.fail_stale(all_running=True) == 1
    (record,) = store.records()
    assert record.status is TrialStatus.INTERRUPTED
    assert store.finished() == {}


def test_load_trials_from_run_folder_and_url(store: Store, tmp_path: Path):
    store.enqueue([Config()], protocol="staged", split=SPLIT, space=SPACE)
    (tmp_path / RUN_FILE).write_text(json.dumps({"schema_version": 1, "study": "unit"}))
    assert [r.config for r in load_trials(tmp_path)] == [Config()]
    assert len(load_trials(default_url(tmp_path), "unit")) == 1
    with pytest.raises(UserError, match="not an hpstudy run folder"):
        load_trials(tmp_path / "nowhere")
    with pytest.raises(UserError, match="give the study name"):
        load_trials(default_url(tmp_path))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:s3cret@host:5432/db", "postgresql://u@host:5432/db"),
        ("postgresql+psycopg2://u:p%40ss@host/db", "postgresql+psycopg2://u@host/db"),
        ("postgresql://u@host/db?password=s3cret&sslmode=require",
         "postgresql://u@host/db?sslmode=require"),
        ("postgresql://u@host/db", "postgresql://u@host/db"),
        ("postgresql://u@/db?host=/tmp/sock", "postgresql://u@/db?host=/tmp/sock"),  # not re-quoted
        ("sqlite:////tmp/a b/study.db", "sqlite:////tmp/a b/study.db"),
    ],
)  # fmt: skip
def test_redact_url_removes_only_the_password(url: str, expected: str):
    assert redact_url(url) == expected


def test_redact_args_covers_both_option_forms():
    url = "postgresql://u:s3cret@host/db"
    argv = ["hpstudy", "run", "grid", "--storage", url, f"--storage={url}", "--out", "runs/x"]
    assert redact_args(argv, url) == [
        "hpstudy", "run", "grid", "--storage", "postgresql://u@host/db",
        "--storage=postgresql://u@host/db", "--out", "runs/x",
    ]  # fmt: skip
    assert redact_args(argv, None) == argv
    assert redact_args(["--storage", "sqlite:///x.db"], "sqlite:///x.db") == [
        "--storage", "sqlite:///x.db"
    ]  # fmt: skip


def _refuse_login(reason: str):
    def storage(url, **kwargs):
        raise RuntimeError(f'connection to server at "db.example" port 5432 failed: {reason}')

    return storage


def test_a_failed_login_with_run_json_url_says_how_to_fix_it(tmp_path: Path, monkeypatch):
    """run.json keeps no password: a failed login names PGPASSWORD, ~/.pgpass and --storage."""
    info = {"schema_version": 1, "study": "unit", "storage": "postgresql://u@db.example/hp"}
    (tmp_path / RUN_FILE).write_text(json.dumps(info))
    monkeypatch.setattr(
        "hpstudy.storage.backends.RDBStorage", _refuse_login("fe_sendauth: no password supplied")
    )
    with pytest.raises(UserError) as caught:
        open_run(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "no password supplied" in message
    assert "PGPASSWORD" in message and "~/.pgpass" in message and "--storage URL" in message
    # Other failures keep their own message; an explicit --storage URL is not blamed on run.json.
    monkeypatch.setattr("hpstudy.storage.backends.RDBStorage", _refuse_login("Connection refused"))
    with pytest.raises(UserError, match="Connection refused") as caught:
        open_run(tmp_path)
    assert "PGPASSWORD" not in str(caught.value)
    refuse = _refuse_login("password authentication failed")
    monkeypatch.setattr("hpstudy.storage.backends.RDBStorage", refuse)
    with pytest.raises(UserError) as caught:
        open_run(tmp_path, "postgresql://u:wrong@db.example/hp")
    assert "PGPASSWORD" not in str(caught.value) and "wrong" not in str(caught.value)


def test_status_reads_the_storage_given_over_run_json(store: Store, tmp_path: Path, capsys):
    from hpstudy import cli

    info = {"schema_version": 1, "study": "unit", "storage": "postgresql://u@db.invalid/hp",
            "study_toml": (Path("studies") / "paper.toml").read_text(), "overrides": {},
            "split": SPLIT}  # fmt: skip
    (tmp_path / RUN_FILE).write_text(json.dumps(info))
    assert cli.main(["status", str(tmp_path), "--json", "--storage", default_url(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == []


@pytest.mark.slow  # 1.3 to 2.2 s here: the fast tier stays under a minute
def test_a_trial_a_process_died_holding_before_it_beat_is_freed(tmp_path):
    """A worker killed between Optuna's ask and its tag leaves a RUNNING trial with no heartbeat,
    which Optuna's stale check never finds: the others would wait for it forever."""
    import optuna

    url = default_url(tmp_path)
    store = Store(url, "orphan", grace_s=1)
    store.create_or_load()
    orphan = optuna.load_study(study_name="orphan", storage=url).ask()  # untagged, unbeaten
    assert store.fail_stale() == 0  # younger than the grace period: perhaps still being tagged
    time.sleep(1.5)  # past the grace period (a loaded machine only makes it older)
    assert store.fail_stale() == 1
    states = {t.number: t.state for t in optuna.load_study(study_name="orphan",
                                                            storage=url).trials}  # fmt: skip
    assert states[orphan.number] == TrialState.FAIL


@pytest.mark.slow  # waits out the grace period, as the test above
def test_a_trial_a_process_died_holding_between_its_tag_and_its_heartbeat_is_freed(tmp_path):
    """Killed after the tag and before the first heartbeat row (what a loaded CI run did to a
    search worker): the trial names a dead worker and has no heartbeat, so Optuna's check never
    finds it, and every other worker waited for it forever."""
    import optuna

    url = default_url(tmp_path)
    store = Store(url, "tagged", grace_s=1)
    store.create_or_load()
    study = optuna.load_study(study_name="tagged", storage=url)
    trial = study.ask()  # no heartbeat row: this storage keeps none
    study._storage.set_trial_user_attr(trial._trial_id, "worker", "elsewhere:1")
    assert store.fail_stale() == 0  # younger than the grace period: its holder may beat yet
    time.sleep(1.5)
    assert store.fail_stale() == 1
    assert study._storage.get_trial(trial._trial_id).state == TrialState.FAIL
