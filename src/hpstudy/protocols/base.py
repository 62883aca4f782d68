"""What every protocol shares: the data it trains on, the trained-once Trainer, and the base class.

    >>> trainer = Trainer(store, data, protocol="staged", space=study.space, on_event=print)
    >>> records = trainer.ensure(configs)       # key -> finished TrialRecord, training the missing
    >>> protocol = make_protocol(study, trainer); tables = protocol.run()

`Trainer.ensure` is the one way configurations get trained: it reuses every finished trial with
the same key (configuration, seed, split), enqueues what is missing, claims WAITING trials
atomically, trains all it claimed in one engine call and finishes each. Trials other processes
run are waited for (and re-done if their process dies), so several workers and a rerun after a
crash both end with exactly one finished trial per key.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hpstudy.atomic import atomic_file
from hpstudy.engine.results import TrialResult
from hpstudy.space import Config
from hpstudy.storage import Store, TrialRecord, TrialStatus, trial_key
from hpstudy.study import Study
from hpstudy.studydata import Data
from hpstudy.tables import Cell, Row, StageTable, mean_ci

POLL_S = 2.0  # how often a process waiting for other processes' trials looks again
MEMORY_WEIGHTS = 16  # best-epoch weights kept in memory (grid, search): the best trials only


# -- progress events (the CLI prints them; the library never does) ------------------------------


@dataclass(frozen=True)
class StageStarted:
    index: int  # 1-based
    n_stages: int | None  # None where not known in advance (search)
    name: str
    n_configs: int  # configurations x seeds the stage needs
    n_reused: int  # of those, already finished in the store


@dataclass(frozen=True)
class EpochDone:
    stage: str
    population: int  # 0-based
    n_populations: int
    epoch: int  # 1-based
    max_epochs: int
    n_members: int  # members still training in this population
    n_trials: int  # trials in this engine call
    elapsed_s: float  # since the engine call began
    progress: float  # share of the call's (upper-bound) work done, see engine.EpochEvent
    expected_progress: float = 0.0  # share of the work expected with early stopping


@dataclass(frozen=True)
class Waiting:
    n_running_elsewhere: int  # trials other processes hold


@dataclass(frozen=True)
class StageFinished:
    table: StageTable


Event = StageStarted | EpochDone | Waiting | StageFinished


@dataclass
class Trainer:
    """Trains configurations at most once per key, through the store."""

    store: Store
    data: Data
    protocol: str
    space: dict[str, tuple]
    on_event: Callable[[Event], None] = lambda event: None
    batch: int = 1_000_000  # most trials claimed per engine call
    weights_dir: Path | None = None  # where best-epoch weights are cached (None: not cached)
    stage: str = ""  # label for progress events
    trained: list[TrialRecord] = field(default_factory=list)  # finished by this process
    weights: dict[str, dict] = field(default_factory=dict)  # key -> state_dict, this process
    _accuracy: dict[str, float] = field(default_factory=dict)  # key -> best accuracy (weights)

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
            claimed = self._claim(by_key, todo)
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

    def _claim(self, by_key: dict[str, list[TrialRecord]], todo: list[str]) -> list[tuple]:
        """Claim up to `batch` WAITING trials of keys nobody runs; drop any duplicate claims."""
        claimed = []
        for k in todo:
            records = by_key.get(k, [])
            if any(r.status is TrialStatus.RUNNING for r in records):
                continue
            for r in records:
                if r.status is TrialStatus.WAITING and self.store.claim(self._id(r)):
                    claimed.append((k, self._id(r)))
                    break
            if len(claimed) >= self.batch:
                break
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
    ) -> list[TrialResult]:
        """Train claimed trials (trial_id, config) in one engine call and finish each.

        `prune(trial_id, epoch, accuracy) -> bool` is asked after every epoch of every member.
        If training raises (or is interrupted), the trials are marked interrupted, so they are
        trained again by the next run instead of waiting for a heartbeat to go stale.
        """
        from hpstudy import engine

        ids = [tid for tid, _ in trials]
        configs = [c for _, c in trials]
        max_epochs = max(c.max_epochs for c in configs)

        def on_epoch(event) -> list[int]:
            self.on_event(EpochDone(self.stage, event.population, event.n_populations,
                                    event.epoch, max_epochs, event.n_members, len(configs),
                                    event.elapsed_s, event.progress,
                                    event.expected_progress))  # fmt: skip
            if prune is None:
                return []
            return [
                i for i, acc in zip(event.config_indices, event.eval_accuracy, strict=True)
                if prune(ids[i], event.epoch, acc)
            ]  # fmt: skip

        try:
            with self.store.heartbeat(ids):
                results = engine.train(
                    configs,
                    self.data.train,
                    self.data.evaluation,
                    on_epoch=on_epoch,
                    **self.data.engine_options(),
                )
        except BaseException:
            self.store.fail_running(ids)
            raise
        n_train = len(self.data.train.y)
        for tid, result in zip(ids, results, strict=True):
            key = self.key(result.config)
            if result.state_dict is not None:
                self._keep(key, result)
            if self.store.finish(tid, result, n_train=n_train, digests=self.data.digests):
                self.trained.append(self.store.record(tid))
        return results

    def _keep(self, key: str, result: TrialResult) -> None:
        """Cache best-epoch weights: all on disk when `weights_dir` is set (staged runs prune
        it per stage); in memory only the best few, so a 1,875-trial grid stays small."""
        if self.weights_dir is not None:
            save_weights(self.weights_dir / f"{key}.pt", result.state_dict)
            return
        self.weights[key] = result.state_dict
        self._accuracy[key] = result.best_accuracy if result.outcome.is_usable else -1.0
        if len(self.weights) > MEMORY_WEIGHTS:
            worst = min(self.weights, key=lambda k: self._accuracy[k])
            del self.weights[worst]

    def weights_of(self, record: TrialRecord) -> tuple[dict, bool]:
        """(best-epoch state_dict, retrained?) of a finished trial.

        From this process's memory, else the run's weights cache, else trained again alone
        (not stored as a trial): same seed and device give the same weights up to float32
        rounding, since the population it first trained in may have been batched differently.
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
    """torch.save to a temporary name, then rename (a crash never leaves half a file)."""
    with atomic_file(path) as f:
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, f)


class Protocol(abc.ABC):
    """Decides what to train next from what the store holds, and tabulates the results."""

    name: str = ""

    def __init__(self, study: Study, trainer: Trainer | None = None) -> None:
        self.study = study
        self.trainer = trainer  # None when only tabulating a finished run

    @abc.abstractmethod
    def run(self) -> list[StageTable]:
        """Train whatever is missing; return the tables (emitting StageFinished for each)."""

    @abc.abstractmethod
    def tables(
        self, records: Sequence[TrialRecord], tests: dict[str, float], split: dict | None = None
    ) -> list[StageTable]:
        """The tables, recomputed from stored records alone.

        `tests`: key -> test accuracy of stage winners; `split`: the run's split (default: the
        trainer's).
        """

    def rule(self) -> str:
        split = (
            "test set (the paper's leak)"
            if self.study.selection.is_leaky
            else (f"validation split ({self.study.validation_size:,} images held out of training)")
        )
        seeds = f"mean over {self.study.n_seeds} seeds" if self.study.n_seeds > 1 else "one seed"
        return f"early stopping and selection on the {split}; winner by {seeds}"


def ranked_table(study: Study, protocol: str, rows: list[Row], *, name: str, title: str,
                 rule: str) -> StageTable:  # fmt: skip
    """A one-round table (grid, search): rows best first, the winner marked. `title` may use
    `{n}`, the number of rows."""
    rows = sorted(rows, key=lambda r: -r.selection.mean if r.selection.n else 1.0)
    winner = pick_winner(rows)
    if winner is not None:
        rows[winner] = dataclasses.replace(rows[winner], is_winner=True)
    return StageTable(
        study=study.name,
        protocol=protocol,
        index=1,
        name=name,
        title=title.format(n=len(rows)),
        factor="",
        selection=study.selection.value,
        rule=rule,
        rows=tuple(rows),
    )


def usable_accuracy(record: TrialRecord) -> float:
    """The record's best accuracy, or nan where it is not a fair number (diverged, failed)."""
    return record.best_accuracy if record.is_usable else float("nan")


def make_row(
    label: str,
    records: Sequence[TrialRecord],
    *,
    tests: dict[str, float],
    leaky: bool,
    published: float | None = None,
) -> Row:
    """One table row from the records of one configuration's seeds (in seed order)."""
    records = sorted(records, key=lambda r: r.seed)
    selection = mean_ci([usable_accuracy(r) for r in records])
    if leaky:
        test: Cell | None = selection
    else:
        found = [tests[r.key] for r in records if r.key in tests]
        test = mean_ci(found) if found else None
    config = records[0].config.to_dict()
    return Row(
        label=label,
        config=config,
        seeds=tuple(r.seed for r in records),
        selection=selection,
        test=test,
        best_epochs=tuple(r.best_epoch for r in records),
        epochs=tuple(r.epochs for r in records),
        outcomes=tuple(r.outcome.value if r.outcome else "" for r in records),
        trial_numbers=tuple(r.number for r in records),
        published=published,
    )


def pick_winner(rows: Sequence[Row]) -> int | None:
    """Index of the row with the highest mean selection accuracy (first on ties)."""
    best, best_i = -1.0, None
    for i, row in enumerate(rows):
        if row.selection.n and row.selection.mean > best:
            best, best_i = row.selection.mean, i
    return best_i
