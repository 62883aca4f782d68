"""The trial store: Optuna's RDB storage (SQLite by default, PostgreSQL for several workers).

Reading a run (what the report uses):

    >>> from hpstudy.storage.rundir import load_trials
    >>> records = load_trials("runs/paper")                # list[TrialRecord], by trial number
    >>> done = [r for r in records if r.status is TrialStatus.FINISHED]
    >>> done[0].config, done[0].seed, done[0].eval_accuracy, done[0].best_epoch, done[0].outcome

Writing (what protocols do, through `hpstudy.protocols.trainer.Trainer`):

    >>> st = Store(default_url("runs/paper"), "paper"); st.create_or_load()
    >>> ids = st.enqueue([config], protocol="staged", split=split_info, space=study.space)
    >>> if st.claim(ids[0]): st.finish(ids[0], result, n_train=60_000, digests=ds.digests)

One Optuna study per hpstudy study; one Optuna trial per (configuration, seed, split). A trial
is enqueued WAITING with its identity (`key`, `config`, `seed`, `protocol`, `split`) as user
attributes and its factors as Optuna params, claimed atomically (WAITING -> RUNNING only where
still WAITING), and finished by writing one `result` user attribute (curves, best epoch,
outcome, timings, device, versions, data digests) and its state. Only the state change marks it
done, so a process killed at any moment leaves either a finished trial or one that is re-done.
On an RDB storage each of these writes many trials in one transaction (`enqueue`, `claim_many`,
`finish_many`: `hpstudy.storage.batched`), and SQLite runs in WAL mode (`backends`).
Dead processes are found by Optuna's heartbeats (`fail_stale`, in `hpstudy.storage.liveness`);
the storage itself is opened by `hpstudy.storage.backends`.

A process paused past the grace period (SIGSTOP, a sleeping laptop) is taken for dead the same
way: when it resumes, the trials it holds may already be FAIL. Every write to such a trial says
so instead of raising: `finish`, `claim` and `tell` return False (and `finish` notes the trial in
`lost`), `discard` and the heartbeats let it be, and `ask` asks again. The other process's
record stands; the paused one drops its result.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from hpstudy.errors import UserError
from hpstudy.storage import GRACE_S, HEARTBEAT_S, batched
from hpstudy.storage.backends import (
    defer_interrupts_in_sessions,
    end_wal,
    is_journal,
    open_storage,
)
from hpstudy.storage.lifecycle import TrialWrites
from hpstudy.storage.liveness import Liveness
from hpstudy.storage.records import (
    TrialRecord,
    record_from_trial,
)
from hpstudy.storage.urls import check_durable, redact_url

TEST_META = "test_accuracy:"  # study attribute prefix: trial key -> test accuracy read once
SETTINGS_META = "settings"  # study attribute: what the first process trained with


optuna.logging.set_verbosity(optuna.logging.WARNING)


class Store(Liveness, TrialWrites):
    """One hpstudy study in an Optuna storage: enqueue, claim, finish, read."""

    def __init__(
        self, url: str, study_name: str, *, heartbeat_s: int = HEARTBEAT_S,
        grace_s: int = GRACE_S, reader: bool = False,
    ) -> None:  # fmt: skip
        check_durable(url)
        defer_interrupts_in_sessions()
        self.url, self.study_name = url, study_name
        self.held: set[int] = set()  # trials this process claimed and has not ended
        # Trials another process ended while this one held them (it was paused past the grace
        # period) -> the longest this process had gone without a heartbeat for them, in seconds.
        self.lost: dict[int, float] = {}
        self.clock = time.time  # wall time, which a sleeping machine's pause counts (tests fake it)
        self.created = False  # whether create_or_load made the study (grid: who enqueues)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"  # this process, for the others
        self.grace_s = grace_s
        self._lock = threading.Lock()  # `held` and `_beats`, shared with the heartbeat thread
        self._beats: dict[int, tuple[float, float]] = {}  # held trial -> (last beat, longest gap)
        heartbeat_s = max(1, min(heartbeat_s, grace_s // 3))  # several beats per grace period
        self.heartbeat_s = heartbeat_s
        # Optuna's RDB storage (SQLite, PostgreSQL) or its journal file (`journal:///path`);
        # the name `_rdb` is kept for both.
        self._rdb = open_storage(url, heartbeat_s, grace_s, wal=not reader)
        self.is_journal = is_journal(url)
        # Many trials per transaction (`batched`), or Optuna's per-trial methods: on a journal
        # file, or an Optuna whose private helpers moved.
        self._batched = batched.supported(self._rdb)
        self._loaded: optuna.Study | None = None

    # -- the study ---------------------------------------------------------------------------

    def create_or_load(self, sampler: optuna.samplers.BaseSampler | None = None) -> bool:
        """Open the study, creating it if needed; True if this call created it (atomically)."""
        created = True
        try:
            self._rdb.create_new_study([optuna.study.StudyDirection.MAXIMIZE], self.study_name)
        except optuna.exceptions.DuplicatedStudyError:
            created = False
        self._loaded = optuna.load_study(
            study_name=self.study_name, storage=self._rdb, sampler=sampler
        )
        self.created = created
        return created

    def exists(self) -> bool:
        return self.study_name in self.study_names()

    @property
    def _optuna(self) -> optuna.Study:
        if self._loaded is None:
            if not self.exists():
                raise UserError(
                    f"no study {self.study_name!r} in {redact_url(self.url)}; run "
                    f"`hpstudy run` first or check the name"
                )
            self._loaded = optuna.load_study(study_name=self.study_name, storage=self._rdb)
        return self._loaded

    @property
    def optuna_study(self) -> optuna.Study:
        """The Optuna study, for reading with Optuna's own tools (`trials_dataframe`, its
        plots, the dashboard); hpstudy writes only through this class."""
        return self._optuna

    def close_log(self) -> None:
        """A SQLite store's log folded into its file, for readers (`backends.end_wal`); the
        last user of a private store calls it (a run under its folder's lock)."""
        end_wal(self._rdb)

    def delete(self) -> None:
        """Remove the study and all its trials (`--fresh`)."""
        if self.exists():
            optuna.delete_study(study_name=self.study_name, storage=self._rdb)
        self._loaded = None

    def get_meta(self, key: str, default: Any = None) -> Any:
        return self._optuna.user_attrs.get(key, default)

    def get_meta_prefixed(self, prefix: str) -> dict[str, Any]:
        """Study attributes whose key starts with `prefix`, keyed by the rest of the key."""
        attrs = self._optuna.user_attrs
        return {k.removeprefix(prefix): v for k, v in attrs.items() if k.startswith(prefix)}

    def set_meta(self, key: str, value: Any) -> None:
        self._optuna.set_user_attr(key, value)

    def test_accuracies(self) -> dict[str, float]:
        """Trial key -> test accuracy measured once at its chosen epoch (clean protocols)."""
        return {k: float(v) for k, v in self.get_meta_prefixed(TEST_META).items()}

    def set_test_accuracy(self, key: str, accuracy: float) -> None:
        self.set_meta(TEST_META + key, float(accuracy))

    def study_names(self) -> set[str]:
        """Every study this storage holds (a run folder's store should hold one)."""
        return {s.study_name for s in self._rdb.get_all_studies()}

    # -- settings that travel with the study ---------------------------------------------------

    def check_settings(self, settings: dict[str, Any], *, wait_s: float = 60.0) -> None:
        """The first process records `settings` (seeds, epochs, limits, dtype, data digests)
        with the study; any later one with other settings is refused with one line naming the
        difference (it would train other trial keys beside the study's, unnoticed)."""
        settings = json.loads(json.dumps(settings))  # tuples -> lists, as stored
        recorded = self.get_meta(SETTINGS_META)
        deadline = time.monotonic() + wait_s
        while recorded is None and not self.created and time.monotonic() < deadline:
            time.sleep(0.5)  # the creating process writes them in a moment
            recorded = self._reload_meta(SETTINGS_META)
        if recorded is None:
            self.set_meta(SETTINGS_META, settings)
            return
        differ = [k for k in sorted(settings.keys() | recorded.keys())
                  if settings.get(k) != recorded.get(k)]  # fmt: skip
        if differ:
            ours = ", ".join(f"{k}={settings.get(k)!r}" for k in differ)
            theirs = ", ".join(f"{k}={recorded.get(k)!r}" for k in differ)
            raise UserError(f"study {self.study_name!r} in {redact_url(self.url)} was started with "
                            f"{theirs}, this process has {ours}; use the same options as the "
                            "study's first process, or another study name")  # fmt: skip

    def _reload_meta(self, key: str) -> Any:
        return self._rdb.get_study_user_attrs(self._optuna._study_id).get(key)

    # -- search: the sampler's door ------------------------------------------------------------

    def use_sampler(self, sampler: optuna.samplers.BaseSampler,
                    pruner: optuna.pruners.BasePruner) -> None:  # fmt: skip
        self._optuna.sampler, self._optuna.pruner = sampler, pruner

    def ask(self) -> optuna.Trial:
        """A new trial from the sampler (RUNNING, held by this process)."""
        while True:
            with warnings.catch_warnings():  # heartbeats: we keep them ourselves
                warnings.simplefilter("ignore", UserWarning)
                trial = self._optuna.ask()
            try:
                self._hold(trial._trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                # Taken for dead between Optuna's ask and the tag (this process was paused):
                # an untrained proposal, FAIL already; ask for another.
                self._release(trial._trial_id)
                continue
            if "key" not in trial.user_attrs:
                return trial
            # Optuna's ask takes the oldest WAITING trial: one enqueued for training (another
            # worker's confirmation round) is not a proposal. Given back as interrupted, so
            # its owner enqueues it again.
            self.fail_running([trial._trial_id])

    def tell(self, trial: optuna.Trial, value: float) -> bool:
        """Complete a proposal with `value`; False if another process ended it first (it took
        this one for dead: it was paused), which then stays as that process left it."""
        try:
            told = self._optuna.tell(trial, value, skip_if_finished=True)
            done = told.state == TrialState.COMPLETE
        except optuna.exceptions.UpdateFinishedTrialError:  # ended between the check and tell
            done = False
        self._release(trial._trial_id)
        return done

    def trial_handle(self, trial_id: int) -> optuna.Trial:
        """The Optuna trial object of a RUNNING trial (to report to the pruner)."""
        return optuna.trial.Trial(self._optuna, trial_id)

    def enqueue_params(self, params: dict[str, Any]) -> None:
        """Ask the sampler to propose exactly these params next (tests stick it on a point)."""
        self._optuna.enqueue_trial(params)

    def unlabelled_before(self, number: int) -> int:
        """Trials a sampler proposed before trial `number` that have no identity yet (another
        process is deciding what they are): a search waits for them before judging its own."""
        running = self._optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return sum(t.number < number and "key" not in t.user_attrs for t in running)

    def trial_number(self, trial_id: int) -> int:
        return self._rdb.get_trial(trial_id).number

    def frozen_trials(self, states: Sequence[TrialState] | None = None) -> list[Any]:
        """Optuna's own records of the study's trials (for the importance evaluators)."""
        return self._optuna.get_trials(deepcopy=False, states=states)

    # -- reading -----------------------------------------------------------------------------

    def record(self, trial_id: int) -> TrialRecord | None:
        """One trial, read again (after `finish`)."""
        return record_from_trial(self._rdb.get_trial(trial_id))

    def records_of(self, trial_ids: Sequence[int]) -> list[TrialRecord | None]:
        """`record` of each trial (one session on an RDB storage)."""
        if not self._batched:
            return [self.record(trial_id) for trial_id in trial_ids]
        return [record_from_trial(t) for t in batched.read(self._rdb, trial_ids)]

    def records(self, keys: set[str] | None = None) -> list[TrialRecord]:
        """Every hpstudy trial in the study (or those with one of `keys`), by trial number."""
        trials = self._optuna.get_trials(deepcopy=False)
        if keys is not None:
            trials = [t for t in trials if t.user_attrs.get("key") in keys]
        return [r for t in trials if (r := record_from_trial(t)) is not None]

    def serve_dashboard(self, host: str, port: int) -> None:
        """optuna-dashboard on this storage (the optional extra)."""
        import optuna_dashboard

        optuna_dashboard.run_server(self._rdb, host=host, port=port)

    def finished(self) -> dict[str, TrialRecord]:
        """key -> the finished trial (the first, should a race ever have made two)."""
        done: dict[str, TrialRecord] = {}
        for record in self.records():
            if record.status.is_finished:
                done.setdefault(record.key, record)
        return done
