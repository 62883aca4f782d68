"""The search protocol: Optuna's TPE sampler with a median pruner, in engine-sized batches.

    >>> tables = SearchProtocol(load_study("search"), trainer).run()   # search, then confirmed

Each round asks the sampler for `batch` new configurations, trains them as one population
(reporting every epoch's accuracy so the pruner can stop weak members) and finishes them. With
several seeds (`n_seeds`, `--seeds N`) each proposed configuration is trained once per seed, each
seed its own Optuna trial with the same params (the sampler sees every seed's result; the pruner
judges each seed on its own), and the table gives mean ± CI over seeds. The space may give
ranges (`lr = { low = 1e-4, high = 0.3, log = true }`, depth and width): Optuna samples them as
numbers (`storage.search`), and a trial's configuration holds exactly the sampled values.

A time budget (`[search] time_budget_s`) bounds the run's wall time as well: a round starts only
if it and the confirmation round, at the seconds per model-epoch this process has measured so far
(full length for every trial, no pruning assumed), fit in what is left; the first round always
runs. It counts this process's time: a resumed run starts a new budget.

The budget (`n_trials`) buys distinct configurations. A proposal that repeats a trained
configuration is told that configuration's known result (mean over its seeds; the sampler learns
from it) and spends nothing; one that repeats a configuration of the same round is dropped. The
search ends when the budget is spent, when the space is exhausted, or after `max_repeats`
proposals in a row that were all repeats; the table's rule says which. A resumed search asks only
for what is left, after first training any seed an interrupted round left missing.

Confirmation: the `confirm_top` best configurations (by their search score, the mean over search
seeds) are retrained with `confirm_seeds` new seeds, `seed + 1000 + i` (never a search seed),
on the same split and selection. The second table gives their confirmed mean ± CI, ranked; its
winner is the final model. Search scores are maxima over many tried configurations, so they
overstate what a configuration does on fresh seeds (the winner's curse); the rule says by how much.

A worker paused past the grace period may find its trials taken for dead and ended by another
process: a lost proposal is given up (its configuration is free again), a lost trial in training
is stopped at its next epoch and its result dropped (`Trainer.train_trials` says so).
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from collections.abc import Sequence

from hpstudy.config.config import Config
from hpstudy.config.factors import space_size
from hpstudy.protocols.base import Protocol, evaluate_test_once
from hpstudy.protocols.events import StageFinished, StageStarted, Waiting
from hpstudy.protocols.trainer import POLL_S
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord, TrialStatus, objective_value
from hpstudy.storage.search import Searcher, SearchTrial
from hpstudy.tabulate.plans import seedless
from hpstudy.tabulate.search import MAX_REPEATS, search_tables, top_rows


class SearchProtocol(Protocol):
    name = "search"
    max_repeats = MAX_REPEATS

    def run(self) -> list[StageTable]:
        trainer, study = self.trainer, self.study
        store = trainer.store
        seed = study.sampler_seed
        if trainer.shared:  # one seed in every worker would propose the same points in each
            seed += zlib.crc32(store.worker.encode()) % 1_000_003
        self.searcher = Searcher(store, study.space, sampler_seed=seed, pruner=study.pruner)
        self.n_told = 0  # repeated proposals told their known result (this process)
        self.stopped_by_repeats = False
        self.out_of_time = False
        self.clock = TimeBudget(study.time_budget_s)
        round_index = 0
        confirmation_epochs = study.confirm_top * study.confirm_seeds * study.max_epochs
        limit = min(study.n_trials, self.space_size)
        with store.heartbeat():  # every trial this process holds, asked or training
            while True:
                store.fail_stale()
                self._complete_seeds()
                records = store.records()
                left = limit - len(self._reserved(records))
                ended = left <= 0 or self.stopped_by_repeats or self.out_of_time
                if ended or not self._may_ask(left, confirmation_epochs):
                    # Done asking; the search is over once no process holds a search trial (a
                    # killed worker's trials free their configurations: asked again).
                    n_running = self._n_running(records)
                    if not n_running:
                        break
                    trainer.on_event(Waiting(n_running))
                    time.sleep(POLL_S)
                    continue
                size = min(trainer.claim_size(left, None), left)
                asked = self._ask_round(size, limit)
                if not asked:
                    continue
                round_index += 1
                name = f"search round {round_index}"
                trainer.on_event(StageStarted(round_index, None, name, len(asked), 0))
                self._train_round(name, asked)
        search = self.tables(store.records(), {})[0]
        self._confirm(search)
        tables = self.tables(store.records(), store.test_accuracies())
        for table in tables:
            trainer.on_event(StageFinished(table))
        return tables

    def _may_ask(self, left: int, confirmation_epochs: int) -> bool:
        """Whether the time budget allows another round (False from then on)."""
        study = self.study
        size = min(study.batch, left)
        if not self.clock.allows(size * study.n_seeds * study.max_epochs, confirmation_epochs):
            self.out_of_time = True
        return not self.out_of_time

    def _n_running(self, records: Sequence[TrialRecord]) -> int:
        """Search trials some process holds, proposals not yet labelled included."""
        running = [r for r in self._search_records(records) if r.status is TrialStatus.RUNNING]
        return len(running) + self.trainer.store.unlabelled_before(math.inf)

    @property
    def space_size(self) -> float:
        """Configurations the space holds (math.inf with a float range: never exhausted)."""
        return space_size(self.study.space)

    def _search_records(self, records: Sequence[TrialRecord]) -> list[TrialRecord]:
        split, seeds = self.trainer.data.split, set(self.study.seeds)
        return [r for r in records if r.split == split and r.seed in seeds]

    def _tried(self, records: Sequence[TrialRecord]) -> dict[Config, list[TrialRecord]]:
        """Configurations with a finished search-seed trial on this split -> those trials."""
        tried: dict[Config, list[TrialRecord]] = {}
        for r in self._search_records(records):
            if r.status.is_finished:
                tried.setdefault(seedless(self.study, r.config), []).append(r)
        return tried

    def _reserved(self, records: Sequence[TrialRecord]) -> set[Config]:
        """Configurations that spend the budget: a search-seed trial finished or held by a
        live process (any worker's). A killed worker's trials free their configuration."""
        held = (TrialStatus.RUNNING, TrialStatus.WAITING)
        return {seedless(self.study, r.config) for r in self._search_records(records)
                if r.status.is_finished or r.status in held}  # fmt: skip

    def _ask_round(self, batch: int, limit: float) -> list[tuple[SearchTrial, Config]]:
        """Up to `batch` new configurations from the sampler, each with a trial per seed.

        A proposal of a trained configuration is told its known result and spends nothing; one
        of a configuration this round or another worker already holds is dropped, and so is one
        past the budget (the round ends). After `max_repeats` repeats in a row the search stops
        (`stopped_by_repeats`), so a sampler stuck on known points ends."""
        trainer = self.trainer
        seen: set[Config] = set()
        asked: list[tuple[SearchTrial, Config]] = []
        repeats = 0
        while len(seen) < batch:
            trial = self.searcher.ask()
            config = self.study.config(seed=self.study.seeds[0], **self._factors(trial.params))
            verdict, known = self._admit(trial, config, seen, limit)
            if verdict == "full":
                self.searcher.drop(trial, "the budget is spent")
                break
            if verdict != "new":
                if verdict == "known":
                    if trial.tell_known(_known_value(known), trainer.key(config)):
                        self.n_told += 1
                else:
                    self.searcher.drop(trial, f"configuration already {verdict}")
                repeats += 1
                if repeats >= self.max_repeats:
                    self.stopped_by_repeats = True
                    break
                continue
            if not trial.label(config, protocol=self.name, split=trainer.data.split):
                continue  # lost while this process was paused: its configuration is free again
            repeats = 0
            seen.add(config)
            asked.append((trial, config))
            for s in self.study.seeds[1:]:
                if (other := self._ask_fixed(config.replace(seed=s))) is not None:
                    asked.append((other, config.replace(seed=s)))
        return asked

    def _admit(self, trial: SearchTrial, config: Config, seen: set[Config],
               limit: float) -> tuple[str, list[TrialRecord]]:  # fmt: skip
        """Whether a proposal is trained: 'new', 'known' (trained: tell it), 'asked this round',
        'held by another worker', or 'full' (the budget is spent).

        Proposals are judged in trial-number order across workers: a proposal waits until every
        earlier one is labelled (or its process found dead), then counts the configurations the
        earlier ones hold. So no configuration is trained twice and the budget holds however
        many workers ask at once."""
        store = self.trainer.store
        while store.unlabelled_before(trial.number):
            time.sleep(0.2)  # another worker is labelling its proposal: a moment
            store.fail_stale()
        records = store.records()
        if config in seen:
            return "asked this round", []
        tried = self._tried(records)
        if config in tried:
            return "known", tried[config]
        reserved = self._reserved([r for r in records if r.number < trial.number])
        if config in reserved:
            return "held by another worker", []
        if len(reserved) >= limit:
            return "full", []
        return "new", []

    def _complete_seeds(self) -> None:
        """Train the seeds missing from configurations already tried (nobody holding them): a
        round whose process was interrupted or killed, or a run resumed with more seeds, so that
        every row has all of its seeds."""
        records = self._search_records(self.trainer.store.records())
        held = {r.key for r in records if r.status is TrialStatus.RUNNING or r.status.is_finished}
        missing = [c for base in self._tried(records) for s in self.study.seeds
                   if self.trainer.key(c := base.replace(seed=s)) not in held]  # fmt: skip
        if missing:
            self.trainer.on_event(StageStarted(0, None, "search: missing seeds", len(missing), 0))
            asked = [(t, c) for c in missing if (t := self._ask_fixed(c)) is not None]
            self._train_round("search: missing seeds", asked)

    def _train_round(self, stage: str, asked: list[tuple[SearchTrial, Config]]) -> None:
        if not asked:
            return
        trials = {trial.trial_id: trial for trial, _ in asked}

        def prune(trial_id: int, epoch: int, accuracy: float) -> bool:
            if not trials[trial_id].report(epoch, accuracy):
                return True  # lost to another process (this one was paused): stop training it
            return trials[trial_id].should_prune()

        self.trainer.stage = stage
        started = time.monotonic()
        # The median pruner judges a member against the trials finished so far: populations
        # advancing together (CUDA's default) would finish none before the others' epochs, and
        # the pruning, so the search, would differ from one population after another.
        results = self.trainer.train_trials([(t.trial_id, c) for t, c in asked], prune=prune,
                                            one_at_a_time=self.study.pruner != "none")  # fmt: skip
        self.clock.spent(time.monotonic() - started, sum(r.epochs_run for r in results))

    def _ask_fixed(self, config: Config) -> SearchTrial | None:
        """A trial for `config` exactly (another seed of a proposed configuration); None when
        another worker holds it."""
        return self.searcher.ask_fixed(config, protocol=self.name, split=self.trainer.data.split)

    def _factors(self, params: dict) -> dict:
        return self.searcher.factors(params, self.study.space)

    def _confirm(self, search: StageTable) -> None:
        """Retrain the search table's `confirm_top` best configurations with the confirmation
        seeds (ordinary trials through `Trainer.ensure`: a resume trains only what is missing)."""
        seeds = self.study.confirmation_seeds
        configs = [row.config.replace(seed=seed)
                   for row in top_rows(self.study, search) for seed in seeds]  # fmt: skip
        if not configs:
            return
        name = "search: confirmation"
        self.trainer.on_event(StageStarted(0, None, name, len(configs), 0))
        self.trainer.stage = name
        with self.trainer.keeping(configs):  # more of them than MEMORY_WEIGHTS may train
            by_key = self.trainer.ensure(configs)
            if not self.study.selection.is_leaky:
                # Selection is over (by validation); each confirming trial reads the test set
                # once, at its best validation epoch: the confirmed table's test column.
                evaluate_test_once(self.trainer, configs, by_key)

    def tables(self, records: Sequence[TrialRecord], tests: dict[str, float]) -> list[StageTable]:
        """`hpstudy.tabulate.search`'s tables; the rule names this protocol's repeat bound."""
        return search_tables(self.study, records, tests, self.trainer.data.split,
                             max_repeats=self.max_repeats)  # fmt: skip


@dataclasses.dataclass
class TimeBudget:
    """The search's wall-clock budget in seconds (None: none), counted from its creation.

    `allows(next, reserve)` says whether a round of `next` model-epochs and a later `reserve`
    (the confirmation) fit in what is left, at the seconds per model-epoch `spent` has measured;
    before any measurement it allows, so a search always trains at least one round."""

    seconds: float | None
    started: float = dataclasses.field(default_factory=lambda: time.monotonic())
    trained_s: float = 0.0
    model_epochs: int = 0

    def spent(self, wall_s: float, model_epochs: int) -> None:
        self.trained_s += wall_s
        self.model_epochs += model_epochs

    def allows(self, next_epochs: int, reserve_epochs: int) -> bool:
        if self.seconds is None or not self.model_epochs:
            return True
        per_epoch = self.trained_s / self.model_epochs
        elapsed = time.monotonic() - self.started
        return elapsed + per_epoch * (next_epochs + reserve_epochs) <= self.seconds


def _known_value(records: Sequence[TrialRecord]) -> float:
    """What a repeated proposal is told: the mean of its seeds' values as `Store.finish` set
    them (`objective_value`)."""
    return sum(objective_value(r.best_accuracy) for r in records) / len(records)
