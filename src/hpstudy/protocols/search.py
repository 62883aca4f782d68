"""The search protocol: Optuna's TPE sampler with a median pruner, in engine-sized batches.

    >>> tables = SearchProtocol(load_study("search"), trainer).run()   # one table, best first

Each round asks the sampler for `batch` trials, trains them as one population (reporting every
epoch's accuracy so the pruner can stop weak members) and finishes them. A configuration the
sampler proposes again is not retrained: the new trial is discarded. The budget (`n_trials`)
counts finished and discarded trials, so a resumed search asks only for what is left. One seed per
trial (the study's first seed).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import optuna

from hpstudy.protocols.base import Protocol, StageFinished, StageStarted
from hpstudy.protocols.grid import config_label
from hpstudy.store import TrialRecord, TrialStatus, distributions_of, params_of, trial_key
from hpstudy.study import FACTORS
from hpstudy.tables import StageTable

N_STARTUP_TRIALS = 10  # random trials before TPE models the space (Optuna's default)


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=N_STARTUP_TRIALS,
                                      constant_liar=True)  # fmt: skip


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)


class SearchProtocol(Protocol):
    name = "search"

    def run(self) -> list[StageTable]:
        trainer, study = self.trainer, self.study
        store = trainer.store
        optuna_study = store.study
        optuna_study.sampler = make_sampler(study.sampler_seed)
        optuna_study.pruner = make_pruner(study.pruner)
        distributions = distributions_of(study.space)
        round_index = 0
        while True:
            records = store.records()
            used = sum(r.status in (TrialStatus.FINISHED, TrialStatus.DISCARDED) for r in records)
            if used >= study.n_trials:
                break
            round_index += 1
            finished = {r.key for r in records if r.status.is_finished}
            batch = min(study.batch, study.n_trials - used)
            trainer.on_event(StageStarted(round_index, None, f"search round {round_index}",
                                          batch, 0))  # fmt: skip
            asked, pairs, seen = {}, [], set(finished)
            for _ in range(batch):
                with warnings.catch_warnings():  # heartbeats: we keep them ourselves
                    warnings.simplefilter("ignore", UserWarning)
                    trial = optuna_study.ask(distributions)
                params = {name: trial.params[name] for name in FACTORS}
                config = study.config(seed=study.seeds[0], **self._factors(params))
                key = trial_key(config, trainer.data.split)
                for attr, value in (
                    ("hpstudy_schema", 1),
                    ("key", key),
                    ("config", config.to_dict()),
                    ("seed", config.seed),
                    ("protocol", self.name),
                    ("split", trainer.data.split),
                ):
                    trial.set_user_attr(attr, value)
                if key in seen:
                    store.discard(trial._trial_id, "configuration already trained")
                    continue
                seen.add(key)
                asked[trial._trial_id] = trial
                pairs.append((trial._trial_id, config))
            if not pairs:
                continue

            def prune(trial_id: int, epoch: int, accuracy: float, asked=asked) -> bool:
                asked[trial_id].report(accuracy, epoch)
                return asked[trial_id].should_prune()

            trainer.stage = f"search round {round_index}"
            trainer.train_trials(pairs, prune=prune)
        tables = self.tables(store.records(), {})
        trainer.on_event(StageFinished(tables[0]))
        return tables

    def _factors(self, params: dict) -> dict:
        space = self.study.space
        by_label = {params_of(self.study.config(seed=0, topology=t))["topology"]: t
                    for t in space["topology"]}  # fmt: skip
        return {**params, "topology": by_label[params["topology"]]}

    def tables(
        self, records: Sequence[TrialRecord], tests: dict[str, float], split: dict | None = None
    ) -> list[StageTable]:
        from hpstudy.protocols.base import make_row, ranked_table

        split = self.trainer.data.split if split is None else split
        rows = [
            make_row(config_label(r.config), [r], tests=tests,
                     leaky=self.study.selection.is_leaky)
            for r in records if r.status.is_finished and r.split == split
        ]  # fmt: skip
        rule = self.rule() + f"; TPE sampler, {self.study.pruner} pruner"
        table = ranked_table(
            self.study,
            self.name,
            rows,
            name="search",
            title="Search: {n} trials, best first",
            rule=rule,
        )
        return [table]  # fmt: skip
