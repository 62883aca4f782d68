"""The search protocol: Optuna's TPE sampler with a median pruner, in engine-sized batches.

    >>> tables = SearchProtocol(load_study("search"), trainer).run()   # one table, best first

Each round asks the sampler for `batch` trials, trains them as one population (reporting every
epoch's accuracy so the pruner can stop weak members) and finishes them. A configuration the
sampler proposes again is not retrained: the new trial is discarded. With several seeds
(`n_seeds`, `--seeds N`) each proposed configuration is trained once per seed, each seed its own
Optuna trial with the same params (the sampler sees every seed's result; the pruner judges each
seed on its own), and the table gives mean ± CI over seeds. The budget (`n_trials`) counts
configurations (tried or discarded), so a resumed search asks only for what is left, after first
training any seed that an interrupted round left missing.
"""

from __future__ import annotations

from collections.abc import Sequence

from hpstudy.protocols.base import Protocol
from hpstudy.protocols.events import StageFinished, StageStarted
from hpstudy.protocols.grid import config_label
from hpstudy.space import Config
from hpstudy.storage import TrialRecord, TrialStatus
from hpstudy.storage.search import Searcher, SearchTrial
from hpstudy.tables import StageTable


class SearchProtocol(Protocol):
    name = "search"

    def run(self) -> list[StageTable]:
        trainer, study = self.trainer, self.study
        store = trainer.store
        self.searcher = Searcher(store, study.space, sampler_seed=study.sampler_seed,
                                 pruner=study.pruner)  # fmt: skip
        self._complete_seeds()
        round_index = 0
        while (used := self._used(store.records())) < study.n_trials:
            round_index += 1
            asked = self._ask_round(min(study.batch, study.n_trials - used))
            name = f"search round {round_index}"
            trainer.on_event(StageStarted(round_index, None, name, len(asked), 0))
            self._train_round(name, asked)
        tables = self.tables(store.records(), {})
        trainer.on_event(StageFinished(tables[0]))
        return tables

    def _used(self, records: Sequence[TrialRecord]) -> int:
        """Budget spent: configurations with a finished trial, plus discarded proposals."""
        tried = {self._base(r.config) for r in records if r.status.is_finished}
        return len(tried) + sum(r.status is TrialStatus.DISCARDED for r in records)

    def _base(self, config: Config) -> Config:
        """A configuration without its seed (as the study's first seed)."""
        return config.replace(seed=self.study.seeds[0])

    def _ask_round(self, batch: int) -> list[tuple[SearchTrial, Config]]:
        """Up to `batch` new configurations from the sampler, each with a trial per seed.

        A configuration already tried is discarded (it still spends budget, so a sampler that
        keeps proposing known points cannot loop forever)."""
        trainer = self.trainer
        finished = {r.key for r in trainer.store.records() if r.status.is_finished}
        seen, asked = set(finished), []
        for _ in range(batch):
            trial = self.searcher.ask()
            config = self.study.config(seed=self.study.seeds[0], **self._factors(trial.params))
            trial.label(config, protocol=self.name, split=trainer.data.split)
            if trainer.key(config) in seen:
                trainer.store.discard(trial.trial_id, "configuration already trained")
                continue
            seen.add(trainer.key(config))
            asked.append((trial, config))
            for seed in self.study.seeds[1:]:
                other = config.replace(seed=seed)
                if trainer.key(other) not in seen:
                    seen.add(trainer.key(other))
                    asked.append((self._ask_fixed(other), other))
        return asked

    def _complete_seeds(self) -> None:
        """Train the seeds missing from configurations already tried: a run interrupted mid-round,
        or one resumed with more seeds, so that every row has all of its seeds."""
        by_base: dict[Config, set[int]] = {}
        for r in self.trainer.store.records():
            if r.status.is_finished and r.split == self.trainer.data.split:
                by_base.setdefault(self._base(r.config), set()).add(r.seed)
        missing = [base.replace(seed=s) for base, seeds in by_base.items()
                   for s in self.study.seeds if s not in seeds]  # fmt: skip
        if missing:
            self.trainer.on_event(StageStarted(0, None, "search: missing seeds", len(missing), 0))
            self._train_round("search: missing seeds", [(self._ask_fixed(c), c) for c in missing])

    def _train_round(self, stage: str, asked: list[tuple[SearchTrial, Config]]) -> None:
        if not asked:
            return
        trials = {trial.trial_id: trial for trial, _ in asked}

        def prune(trial_id: int, epoch: int, accuracy: float) -> bool:
            trials[trial_id].report(epoch, accuracy)
            return trials[trial_id].should_prune()

        self.trainer.stage = stage
        self.trainer.train_trials([(t.trial_id, c) for t, c in asked], prune=prune)

    def _ask_fixed(self, config: Config) -> SearchTrial:
        """A trial for `config` exactly (another seed of a proposed configuration)."""
        return self.searcher.ask_fixed(config, protocol=self.name, split=self.trainer.data.split)

    def _factors(self, params: dict) -> dict:
        return self.searcher.factors(params, self.study.space)

    def tables(
        self, records: Sequence[TrialRecord], tests: dict[str, float], split: dict | None = None
    ) -> list[StageTable]:
        from hpstudy.protocols.base import make_row, ranked_table

        split = self.trainer.data.split if split is None else split
        groups: dict[Config, list[TrialRecord]] = {}
        for r in records:
            if r.status.is_finished and r.split == split and r.seed in self.study.seeds:
                groups.setdefault(self._base(r.config), []).append(r)
        rows = [make_row(config_label(base), group, tests=tests,
                         leaky=self.study.selection.is_leaky)
                for base, group in groups.items()]  # fmt: skip
        rule = self.rule() + f"; TPE sampler, {self.study.pruner} pruner"
        table = ranked_table(
            self.study,
            self.name,
            rows,
            name="search",
            title="Search: {n} configurations, best first",
            rule=rule,
        )
        return [table]  # fmt: skip
