"""Who is alive: heartbeats, the trials of dead processes, and the workers sharing a study.

    >>> with store.heartbeat():          # a thread beats every trial this process holds
    ...     train(...)
    >>> store.fail_stale()               # trials whose process stopped beating: FAIL (re-done)
    >>> store.live_workers()             # ['host:pid', ...] beaten within the grace period
    >>> store.taken_over(ids)            # held trials another process ended meanwhile

On an RDB storage (SQLite, PostgreSQL) Optuna's own per-trial heartbeats decide which trials are
stale; a journal file has none, so a worker's beat (a study attribute per worker) covers every
trial it holds. A beat covers only the trials still held, all in one transaction where Optuna
allows (`hpstudy.storage.batched`). `Liveness` is the part of `hpstudy.storage.store.Store` that
does this; it works on the Store's state (`_rdb`, `_batched`, `_optuna`, `held`, `_beats` under
`_lock`, `clock`, `worker`, `grace_s`, `heartbeat_s`, `is_journal`) and its study attributes
(`get_meta_prefixed`, `set_meta`), and is not used alone.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime

import optuna
from optuna.trial import TrialState

from hpstudy.storage import batched

WORKER_META = "worker:"  # study attribute prefix: 'host:pid' -> time of its last heartbeat


class Liveness:
    """Heartbeats and stale trials, mixed into `Store`."""

    def fail_stale(self, *, all_running: bool = False) -> int:
        """Mark trials of dead processes FAIL (interrupted); returns how many.

        `all_running`: every RUNNING trial is stale, this process's own included (the caller
        holds the run folder's lock and the store is private to that folder). Otherwise
        Optuna's heartbeat grace period decides, and the trials this process holds are never
        taken for dead: it is alive, asking, even if its heartbeat thread has not beaten them
        lately (a process resumed after a pause finds its own trials, not another's).
        """
        if all_running:
            ids = [
                t._trial_id for t in self._optuna.get_trials(False, states=(TrialState.RUNNING,))
            ]
        else:
            ids = self._stale_by_worker_ids()
            if not self.is_journal:  # and Optuna's per-trial heartbeats
                ids += [i for i in self._rdb._get_stale_trial_ids(self._optuna._study_id)
                        if i not in ids]  # fmt: skip
            with self._lock:
                ids = [i for i in ids if i not in self.held]
        return sum(self._end(ids))

    def fail_running(self, trial_ids: Iterable[int]) -> None:
        """Mark this process's trials interrupted (training raised or was stopped)."""
        trial_ids = list(trial_ids)
        self._end(trial_ids)
        for trial_id in trial_ids:
            self._release(trial_id)

    def _end(self, trial_ids: list[int]) -> list[bool]:
        """RUNNING -> FAIL for each of these trials still running; whether each was ended here.
        One conditional UPDATE each on an RDB storage (`batched.end`): a trial another process
        finished meanwhile keeps its result."""
        if self._batched:
            return batched.end(self._rdb, trial_ids, TrialState.FAIL)
        ended = []
        for trial_id in trial_ids:
            try:
                ended.append(bool(self._rdb.set_trial_state_values(trial_id, TrialState.FAIL)))
            except optuna.exceptions.UpdateFinishedTrialError:
                ended.append(False)
        return ended

    def release_held(self) -> None:
        """Mark every trial this process still holds interrupted (it is stopping)."""
        with self._lock:
            held = list(self.held)
        self.fail_running(held)

    # -- workers: who is alive -----------------------------------------------------------------

    def beat_worker(self) -> None:
        """Say this process is alive (a study attribute per worker: host, PID, time). On a
        journal file this is the heartbeat of every trial it holds."""
        self.set_meta(WORKER_META + self.worker, self.clock())
        if self.is_journal:
            with self._lock:
                held = list(self.held)
            self._beaten(held)

    def beat(self, trial_ids: Iterable[int]) -> None:
        """One heartbeat (what `heartbeat`'s thread does every `heartbeat_s`): this worker, and
        those of these trials it still holds on an RDB storage, in one transaction (`batched`)
        where it can. Never raises: a missed beat only ages, and a trial another process has
        ended meanwhile takes a beat harmlessly."""
        with contextlib.suppress(Exception):
            self.beat_worker()
        if self.is_journal:
            return
        with self._lock:  # a finished trial needs no beat
            ids = [trial_id for trial_id in trial_ids if trial_id in self.held]
        if self._batched:
            with contextlib.suppress(Exception):
                batched.beat(self._rdb, ids)
                self._beaten(ids)
            return
        for trial_id in ids:
            try:
                self._rdb.record_heartbeat(trial_id)
            except Exception:
                continue
            self._beaten([trial_id])

    def _beaten(self, trial_ids: Iterable[int]) -> None:
        """Note a heartbeat of these held trials now, and the gap since their last one."""
        now = self.clock()
        with self._lock:
            for trial_id in trial_ids:
                if trial_id in self.held:
                    last, gap = self._beats.get(trial_id, (now, 0.0))
                    self._beats[trial_id] = (now, max(gap, now - last))

    def silence_s(self, trial_id: int) -> float:
        """The longest this process has gone without a heartbeat for a trial it holds, so far
        (more than the grace period: the others took it for dead)."""
        now = self.clock()
        with self._lock:
            last, gap = self._beats.get(trial_id, (now, 0.0))
        return max(gap, now - last)

    def taken_over(self, trial_ids: Iterable[int]) -> set[int]:
        """The trials among these that another process has ended while this one held them (it
        took this one for dead). Only a trial whose heartbeats have been silent for half the
        grace period or more is read: a live process's trials cost nothing here."""
        ended = set()
        for trial_id in trial_ids:
            if trial_id in self.held and self.silence_s(trial_id) >= self.grace_s / 2:
                with contextlib.suppress(KeyError):  # a trial deleted with its study: not ours
                    if self._rdb.get_trial(trial_id).state.is_finished():
                        ended.add(trial_id)
        return ended

    def live_workers(self, beats: dict[str, float] | None = None) -> list[str]:
        """'host:pid' of every process whose last beat (from `beats`, else read now) is younger
        than the grace period."""
        now = self.clock()
        beats = self.get_meta_prefixed(WORKER_META) if beats is None else beats
        return sorted(w for w, t in beats.items() if now - float(t) <= self.grace_s)

    def _stale_by_worker_ids(self) -> list[int]:
        """RUNNING trials whose worker beat and then fell silent for the grace period, and those
        older than the grace period whose worker never beat or that no process has tagged as its
        own. The journal file has no per-trial heartbeats
        (a worker's beat covers every trial it holds); on a database these are the trials a
        process died holding before their first heartbeat row (killed between Optuna's `ask`
        or a claim and its tag, or between the tag and the heartbeat), which Optuna's own check
        never finds stale: the others would wait for them forever."""
        beats = self.get_meta_prefixed(WORKER_META)  # every worker that ever beat: its last
        live = set(self.live_workers(beats)) | {self.worker}
        running = self._optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        now = datetime.now()  # Optuna's trial times are local and naive

        def stale(trial: optuna.trial.FrozenTrial) -> bool:
            worker = trial.user_attrs.get("worker")
            if worker in live:
                return False
            if worker in beats:
                return True  # it beat, then fell silent for the grace period
            # Untagged, or its holder has not beaten yet: asked or claimed a moment ago?
            started = trial.datetime_start or now
            return (now - started).total_seconds() > self.grace_s

        return [t._trial_id for t in running if stale(t)]

    def leave(self) -> None:
        """Say this process has stopped (its beat dated 0): `status` and the others' claim
        sizes stop counting it at once instead of after the grace period."""
        with contextlib.suppress(Exception):
            self.set_meta(WORKER_META + self.worker, 0.0)

    @contextlib.contextmanager
    def heartbeat(self, trial_ids: Iterable[int] | None = None) -> Iterator[None]:
        """Keep these trials (default: every trial this process holds, as it changes) marked
        alive while the block runs, and this worker too (a background thread)."""
        fixed, stop = None if trial_ids is None else list(trial_ids), threading.Event()
        interval = self.heartbeat_s

        def beat() -> None:
            while not stop.wait(interval):
                with self._lock:
                    ids = list(self.held) if fixed is None else fixed
                self.beat(ids)

        thread = threading.Thread(target=beat, name="hpstudy-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
