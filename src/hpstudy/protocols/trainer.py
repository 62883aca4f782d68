"""The Trainer: the one way configurations get trained, each key at most once, through the store.

    >>> trainer = Trainer(store, data, protocol="staged", space=study.space, on_event=print)
    >>> records = trainer.ensure(configs)       # key -> finished TrialRecord, training the missing

`Trainer.ensure` reuses every finished trial with the same key (configuration, seed, split),
enqueues what is missing, claims WAITING trials atomically, trains all it claimed in one engine
call and finishes each population's trials together as its results arrive (one transaction on an
RDB storage). Trials other processes run are waited for (and re-done if their process
dies), so several workers and a rerun after a crash both end with exactly one finished trial
per key. A process paused past the grace period finds the trials it held already ended by another
process (which took it for dead): it drops their results, says so (`TrialLost`) and goes on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hpstudy.atomic import save_torch_atomic
from hpstudy.config.config import Config
from hpstudy.data.prepare import Data
from hpstudy.engine.results import TrialResult
from hpstudy.protocols.events import Claiming, EpochDone, Event, TrialLost, Waiting
from hpstudy.storage import Store, TrialRecord, TrialStatus, interrupts, trial_key

POLL_S = 2.0  # how often a process waiting for other processes' trials looks again
MEMORY_WEIGHTS = 16  # best-epoch weights kept in memory (grid, search): the best trials only


@dataclass
class Trainer:
    """Trains configurations at most once per key, through the store."""

    store: Store
    data: Data
    protocol: str
    space: dict[str, tuple]
    on_event: Callable[[Event], None] = lambda event: None
    batch: int = 1_000_000  # most trials claimed per engine call
    # Several processes share the store (`hpstudy worker`): a claim is at most one population
    # on this device and at most this process's share of what is left among the live workers.
    shared: bool = False
    weights_dir: Path | None = None  # where best-epoch weights are cached (None: not cached)
    stage: str = ""  # label for progress events
    # Told where each engine call's time goes (engine.phases); the runner's phase line.
    on_phase: Callable[[str, float], None] | None = None
    trained: list[TrialRecord] = field(default_factory=list)  # finished by this process
    weights: dict[str, dict] = field(default_factory=dict)  # key -> state_dict, this process
    _accuracy: dict[str, float] = field(default_factory=dict)  # key -> best accuracy (weights)
    _kept: set[str] = field(default_factory=set)  # keys never evicted (see `keeping`)

    def key(self, config: Config) -> str:
        return trial_key(config, self.data.split)

    def ensure(self, configs: Sequence[Config]) -> dict[str, TrialRecord]:
        """key -> finished record for every config, training (once) those not yet finished."""
        want = {self.key(c): c for c in configs}
        while True:
            self.store.fail_stale()
            by_key = self._trials_by_key(set(want))
            done = {k: r for k, rs in by_key.items() for r in rs if r.status.is_finished}
            todo = [k for k in want if k not in done]
            self._discard_leftovers(by_key, done)
            if not todo:
                return {k: done[k] for k in want}
            status = {k: {r.status for r in by_key.get(k, [])} for k in todo}
            missing = [
                k for k in todo if not status[k] & {TrialStatus.WAITING, TrialStatus.RUNNING}
            ]
            if missing:
                self.store.enqueue(
                    [want[k] for k in missing],
                    protocol=self.protocol,
                    split=self.data.split,
                    space=self.space,
                )
                by_key = self._trials_by_key(set(want))
            free = [k for k in todo if TrialStatus.RUNNING not in status[k]]
            held = len(todo) - len(free)  # by other processes (ours are finished by now)
            limit = self.claim_size(len(free), want[free[0]], held=held) if free else 0
            claimed = self._claim(by_key, todo, limit)
            if claimed:
                self.train_trials([(tid, want[k]) for k, tid in claimed])
                continue
            self.on_event(Waiting(sum(TrialStatus.RUNNING in status[k] for k in todo)))
            time.sleep(POLL_S)

    def _trials_by_key(self, keys: set[str]) -> dict[str, list[TrialRecord]]:
        by_key: dict[str, list[TrialRecord]] = {}
        for record in self.store.records(keys):
            by_key.setdefault(record.key, []).append(record)
        return by_key

    def claim_size(self, n_left: int, config: Config | None, *, held: int = 0) -> int:
        """How many of `n_left` unclaimed trials this process claims now: `batch`; when shared,
        also at most one population of `config`'s shape on this device and at most an even share
        among the live workers (their heartbeats) of what is left, counting the `held` trials
        other workers run; at least one. Emits `Claiming` when shared."""
        if not self.shared:
            return self.batch
        from hpstudy.engine.planning import max_members

        fit = None
        if config is not None:  # (a search's next configurations are not known yet)
            device, n_eval = torch.device(self.data.device), len(self.data.evaluation.y)
            fit = max_members(config, device=device, dtype=self.data.dtype, n_eval=n_eval,
                              optimizer_step=self.data.optimizer_step)  # fmt: skip
        self.store.beat_worker()
        n_live = len(self.store.live_workers())
        # A worker that sees no peer yet still leaves half: one started a few seconds later
        # (a job array on a busy cluster) finds work instead of an empty queue.
        share = -(-(n_left + held) // max(2, n_live))
        size = max(1, min(self.batch, share, fit or share))
        self.on_event(Claiming(size, n_left, max(1, n_live), fit))
        return size

    def _claim(
        self, by_key: dict[str, list[TrialRecord]], todo: list[str], limit: int
    ) -> list[tuple]:
        """Claim up to `limit` WAITING trials of keys nobody runs; drop any duplicate claims."""
        groups: dict[str, list[int]] = {}  # key nobody runs -> its WAITING trials: one claim
        for k in todo:
            records = by_key.get(k, [])
            waiting = [self._id(r) for r in records if r.status is TrialStatus.WAITING]
            if waiting and not any(r.status is TrialStatus.RUNNING for r in records):
                groups[k] = waiting
        key_of = {tid: k for k, ids in groups.items() for tid in ids}
        got = self.store.claim_many(list(groups.values()), limit=limit)
        claimed = [(key_of[tid], tid) for tid in got]
        if not claimed:
            return []
        # Two processes may have enqueued and claimed the same key at once: the lower trial
        # number wins, the other is discarded untrained.
        by_key = self._trials_by_key({k for k, _ in claimed})
        kept = []
        for k, tid in claimed:
            rivals = [
                r for r in by_key[k]
                if self._id(r) != tid
                and (r.status.is_finished or r.status is TrialStatus.RUNNING)
                and (r.status.is_finished or self._id(r) < tid)
            ]  # fmt: skip
            if rivals:
                self.store.discard(tid, f"duplicate of trial {rivals[0].number}")
            else:
                kept.append((k, tid))
        return kept

    def _discard_leftovers(self, by_key: dict, done: dict) -> None:
        """WAITING duplicates of finished keys (from a race) are claimed and discarded."""
        for k in done:
            for r in by_key.get(k, []):
                if r.status is TrialStatus.WAITING and self.store.claim(self._id(r)):
                    self.store.discard(self._id(r), f"duplicate of trial {done[k].number}")

    @staticmethod
    def _id(record: TrialRecord) -> int:
        return record.trial_id

    def train_trials(
        self,
        trials: Sequence[tuple[int, Config]],
        *,
        prune: Callable[[int, int, float], bool] | None = None,
        one_at_a_time: bool = False,
    ) -> list[TrialResult]:
        """Train claimed trials (trial_id, config) in one engine call and finish each.

        `prune(trial_id, epoch, accuracy) -> bool` is asked after every epoch of every member;
        a member whose trial another process has ended meanwhile stops at that epoch too.
        `one_at_a_time`: the engine runs the populations one after another even where it would
        run them together (CUDA): for a `prune` that reads the trials finished so far (Optuna's
        median pruner), whose answers would otherwise depend on that choice.
        If training raises (or is interrupted), the trials are marked interrupted, so they are
        trained again by the next run instead of waiting for a heartbeat to go stale.
        """
        from hpstudy import engine

        ids = [tid for tid, _ in trials]
        configs = [c for _, c in trials]
        max_epochs = max(c.max_epochs for c in configs)

        def on_epoch(event) -> list[int]:
            interrupts.raise_pending()  # one a finalizer swallowed stops the run here
            self.on_event(EpochDone(self.stage, event.population, event.n_populations,
                                    event.epoch, max_epochs, event.n_members, len(configs),
                                    event.elapsed_s, event.progress,
                                    event.expected_progress))  # fmt: skip
            # A member another process has ended (this one was paused past the grace period)
            # stops now: its result would be dropped (`TrialLost`) however long it trained.
            lost = self.store.taken_over(ids[i] for i in event.config_indices)
            return [
                i for i, acc in zip(event.config_indices, event.eval_accuracy, strict=True)
                if ids[i] in lost or (prune is not None and prune(ids[i], event.epoch, acc))
            ]  # fmt: skip

        def on_results(population: list[tuple[int, TrialResult]]) -> None:
            # A population's results, stored in one transaction as it ends: an interrupt costs
            # only the populations still training.
            stored = self.store.finish_many([(ids[i], r) for i, r in population],
                                            n_train=len(self.data.train.y),
                                            digests=self.data.digests)  # fmt: skip
            for (i, result), ok in zip(population, stored, strict=True):
                if not ok:
                    # Another process took this one for dead (paused past the grace period)
                    # and ended the trial: the key is trained again elsewhere, so these
                    # weights are not that record's and are not kept.
                    self.on_event(self._lost(ids[i]))
                elif result.state_dict is not None:
                    self._keep(self.key(result.config), result)
            kept = [ids[i] for (i, _), ok in zip(population, stored, strict=True) if ok]
            self.trained += self.store.records_of(kept)

        options = self.data.engine_options()
        if one_at_a_time:
            options["concurrent_populations"] = False
        try:
            with self.store.heartbeat(ids):
                return engine.train(
                    configs,
                    self.data.train,
                    self.data.evaluation,
                    on_epoch=on_epoch,
                    on_results=on_results,
                    on_phase=self.on_phase,
                    **options,
                )
        except BaseException:
            self.store.fail_running(ids)  # the trials not yet finished
            raise

    def _lost(self, trial_id: int) -> TrialLost:
        store = self.store
        return TrialLost(store.trial_number(trial_id), store.lost.get(trial_id, 0.0),
                         store.grace_s)  # fmt: skip

    def _keep(self, key: str, result: TrialResult) -> None:
        """Cache best-epoch weights: all on disk when `weights_dir` is set (staged runs prune
        it per stage); in memory only the best few, so a 1,875-trial grid stays small."""
        if self.weights_dir is not None:
            save_weights(self.weights_dir / f"{key}.pt", result.state_dict)
            return
        self.weights[key] = result.state_dict
        self._accuracy[key] = result.best_accuracy if result.outcome.is_usable else -1.0
        evictable = [k for k in self.weights if k not in self._kept]
        if len(self.weights) > MEMORY_WEIGHTS and evictable:
            del self.weights[min(evictable, key=self._accuracy.__getitem__)]

    @contextlib.contextmanager
    def keeping(self, configs: Sequence[Config]) -> Iterator[None]:
        """Keep these configurations' best-epoch weights in memory however many trials train
        meanwhile, until the block ends: a protocol that reads their test set after they all
        finish must read their own weights, not a retrained copy (weights_of)."""
        keys = {self.key(c) for c in configs} - self._kept
        self._kept |= keys
        try:
            yield
        finally:
            self._kept -= keys

    def weights_of(self, record: TrialRecord) -> tuple[dict, bool]:
        """(best-epoch state_dict, retrained?) of a finished trial.

        From this process's memory, else the run's weights cache, else trained again alone
        (not stored as a trial): on the same device that gives the bits it had in the population
        it first trained in (the engine is neighbour-free: tests/test_invariance.py).
        """
        if record.key in self.weights:
            return self.weights[record.key], False
        if self.weights_dir is not None and (self.weights_dir / f"{record.key}.pt").is_file():
            return torch.load(self.weights_dir / f"{record.key}.pt", weights_only=True), False
        from hpstudy import engine

        (result,) = engine.train(
            [record.config], self.data.train, self.data.evaluation, **self.data.engine_options()
        )
        return result.state_dict, True


def save_weights(path: Path, state_dict: dict) -> None:
    """torch.save to a temporary name, then rename (a crash never leaves half a file, a full disk
    is an OSError naming `path`)."""
    save_torch_atomic({k: v.detach().cpu() for k, v in state_dict.items()}, path)
