"""Writing trials: enqueue, claim, hold, finish, discard; many per transaction where it can.

    >>> ids = store.enqueue(configs, protocol="grid", split=split, space=study.space)
    >>> claimed = store.claim_many([[ids[0]], [ids[1]]], limit=2)    # WAITING -> RUNNING
    >>> store.finish_many([(ids[0], result)], n_train=54_000, digests=digests)  # [True]

A trial's life in the store: enqueued WAITING with its identity, claimed atomically (WAITING ->
RUNNING only where still WAITING) and held by this process (its heartbeats start), then
finished (the result and the state in one transaction) or discarded (a duplicate claim). On an
RDB storage each step writes many trials in one transaction (`hpstudy.storage.batched`); on a
journal file, or an Optuna whose private helpers moved, Optuna's per-trial methods do. A trial
another process ended meanwhile (this one was paused past the grace period) is not written:
`claim` and `finish` say False and `finish` notes it in `lost`.

`TrialWrites` is the part of `hpstudy.storage.store.Store` that does this; it works on the
Store's state (`_rdb`, `_optuna`, `_batched`, `held`, `_beats` under `_lock`, `lost`, `worker`,
`is_journal`) and on `Liveness` (`_beaten`, `silence_s`), and is not used alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import optuna
from optuna.trial import TrialState

from hpstudy.config.config import Config
from hpstudy.config.factors import searched
from hpstudy.engine.results import TrialResult
from hpstudy.storage import batched, interrupts
from hpstudy.storage.keys import distributions_of, identity_attrs, params_of
from hpstudy.storage.records import final_state, objective_value, result_payload


class TrialWrites:
    """A trial's life from enqueued to finished, mixed into `Store`."""

    def enqueue(
        self, configs: Sequence[Config], *, protocol: str, split: dict, space: dict[str, tuple]
    ) -> list[int]:
        """Add WAITING trials (identity and params written with the trial, all in one
        transaction on an RDB storage)."""
        distributions = distributions_of(space)
        templates = []
        for config in configs:
            params = params_of(config, searched(space))  # none for a factor that does not apply
            templates.append(optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=params,
                distributions={name: distributions[name] for name in params},
                user_attrs=identity_attrs(config, protocol=protocol, split=split),
            ))  # fmt: skip
        study_id = self._optuna._study_id
        if self._batched:  # one transaction
            return batched.enqueue(self._rdb, study_id, templates)
        return [self._rdb.create_new_trial(study_id, template) for template in templates]

    def claim(self, trial_id: int) -> bool:
        """WAITING -> RUNNING, atomically; False if another process got there first (or took
        this one for dead between the claim and its tag: it was paused)."""
        return bool(self.claim_many([[trial_id]], limit=1))

    def claim_many(self, groups: Iterable[Sequence[int]], *, limit: int) -> list[int]:
        """Claim the first still-WAITING trial of each group (a key's trials), for at most
        `limit` groups; the trial ids claimed. One transaction on an RDB storage."""
        if not self._batched:
            claimed = []
            for group in groups:
                if len(claimed) >= limit:
                    break
                claimed += next(([tid] for tid in group if self._claim_one(tid)), [])
            return claimed
        with interrupts.deferred():  # claimed and held, or neither: an interrupt waits
            claimed = batched.claim(self._rdb, groups, limit=limit, worker=self.worker)
            self._hold_many(claimed)
        return claimed

    def _claim_one(self, trial_id: int) -> bool:
        """Optuna's per-trial claim (journal file; RDB when `batched` is not supported)."""
        try:
            claimed = self._rdb.set_trial_state_values(trial_id, TrialState.RUNNING)
            if claimed:
                self._hold(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._release(trial_id)
            return False
        return claimed

    def create_running(self, config: Config, *, protocol: str, split: dict,
                       space: dict[str, tuple]) -> int:  # fmt: skip
        """A new trial for `config`, RUNNING and held by this process from the start (it never
        waits where a sampler's `ask` could take it). Two processes may create the same key at
        once: `first_holder` says which of them trains it."""
        distributions = distributions_of(space)
        params = params_of(config, searched(space))
        attrs = identity_attrs(config, protocol=protocol, split=split) | {"worker": self.worker}
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params=params,
            distributions={name: distributions[name] for name in params},
            user_attrs=attrs,
        )
        trial_id = self._rdb.create_new_trial(self._optuna._study_id, template)
        self._hold(trial_id, attr=False)
        return trial_id

    def first_holder(self, trial_id: int, key: str) -> int | None:
        """The number of a trial that holds `key` before `trial_id` does (finished, or running
        with a lower number), or None when `trial_id` is the one to train it."""
        mine = self._rdb.get_trial(trial_id).number
        for r in self.records({key}):
            if r.trial_id == trial_id:
                continue
            if r.status.is_finished or (r.status.value == "running" and r.number < mine):
                return r.number
        return None

    def _hold(self, trial_id: int, *, attr: bool = True) -> None:
        """This process holds the trial: it says so (for `status` and the journal's stale
        check) and its heartbeat starts now, not when training starts."""
        self._hold_many([trial_id])
        if attr:
            self._rdb.set_trial_user_attr(trial_id, "worker", self.worker)
        if not self.is_journal:
            self._rdb.record_heartbeat(trial_id)

    def _hold_many(self, trial_ids: Sequence[int]) -> None:
        """Note these trials as held by this process, beaten now (their rows are written)."""
        with self._lock:
            self.held.update(trial_ids)
        self._beaten(trial_ids)

    def _release(self, trial_id: int) -> None:
        with self._lock:
            self.held.discard(trial_id)
            self._beats.pop(trial_id, None)

    def discard(self, trial_id: int, reason: str) -> None:
        """Give up a claimed duplicate: it stays in the store as FAIL with `discarded` set (or
        as the process that took this one for dead left it: FAIL already, untrained)."""
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self._rdb.set_trial_user_attr(trial_id, "discarded", reason)
            self._rdb.set_trial_state_values(trial_id, TrialState.FAIL)
        self._release(trial_id)

    def finish(self, trial_id: int, result: TrialResult, *, n_train: int, digests: dict) -> bool:
        """Write the result and the state (the state change is what makes it count; one
        transaction on an RDB storage).

        False if the trial was already ended by another process that took this one for dead
        (its heartbeats came late: it was paused past the grace period): that trial stays as the
        other process left it, interrupted, and its key is trained again under another trial;
        this result is dropped and the trial noted in `lost`.
        """
        return self.finish_many([(trial_id, result)], n_train=n_train, digests=digests)[0]

    def finish_many(self, results: Sequence[tuple[int, TrialResult]], *, n_train: int,
                    digests: dict) -> list[bool]:  # fmt: skip
        """`finish` for each (trial id, result), in one transaction on an RDB storage (a
        population's results arrive together); per trial whether it counted."""
        items = [(tid, result_payload(result, n_train=n_train, digests=digests),
                  final_state(result.outcome), [objective_value(result.best_accuracy)])
                 for tid, result in results]  # fmt: skip
        with interrupts.deferred():  # stored and released, or neither: an interrupt waits
            if self._batched:
                done = batched.finish(self._rdb, items)
            else:
                done = [self._finish_one(*item) for item in items]
            for (trial_id, *_), ok in zip(items, done, strict=True):
                if not ok:
                    self.lost[trial_id] = self.silence_s(trial_id)
                self._release(trial_id)
        return done

    def _finish_one(self, trial_id: int, payload: dict, state: TrialState,
                    values: list[float]) -> bool:  # fmt: skip
        """Optuna's per-trial writes: the result, then the state (a kill between the two leaves
        a RUNNING trial with a result, which `fail_stale` makes interrupted)."""
        try:
            self._rdb.set_trial_user_attr(trial_id, "result", payload)
            return self._rdb.set_trial_state_values(trial_id, state, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
