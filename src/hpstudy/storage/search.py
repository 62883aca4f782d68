"""Model-based search through the store: Optuna's TPE sampler and pruners, ask and report.

    >>> searcher = Searcher(store, space, sampler_seed=0, pruner="median")
    >>> trial = searcher.ask()                        # a SearchTrial: id and params
    >>> trial.label(config, protocol="search", split=split)
    >>> trial.report(epoch, accuracy) and trial.should_prune()   # report: False if lost
    >>> again = searcher.ask_fixed(config.replace(seed=43), protocol="search", split=split)
    >>> # None if another worker holds that trial already
    >>> repeat = searcher.ask(); repeat.tell_known(0.87, key)   # a known point: no training

The search protocol sees trial ids and params, never an Optuna object: the sampler, the pruner and
creating a fixed configuration's trial live here, beside the storage they share.

A trial this process holds may be ended by another process that took it for dead (this one was
paused past the grace period, `hpstudy.storage.store`): `label`, `report` and `tell_known` then
return False instead of raising, and `ask` asks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from hpstudy.config.config import Config
from hpstudy.config.factors import FACTORS, Domain, Range, searched
from hpstudy.storage.keys import distributions_of, identity_attrs, trial_key
from hpstudy.storage.store import Store

REPEAT_ATTR = "repeat_of"  # user attribute of a proposal told its known result: the trial key
N_STARTUP_TRIALS = 10  # random trials before TPE models the space (Optuna's default)


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=N_STARTUP_TRIALS,
                                      constant_liar=True)  # fmt: skip


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)


@dataclass
class SearchTrial:
    """One trial the sampler proposed (or a fixed configuration created for it)."""

    _trial: optuna.Trial
    _store: Store

    @property
    def trial_id(self) -> int:
        return self._trial._trial_id

    @property
    def number(self) -> int:
        return self._trial.number

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._trial.params)

    def label(self, config: Config, *, protocol: str, split: dict) -> bool:
        """Write the trial's identity, as `Store.enqueue` does for grid trials: one attribute at
        a time, `key` last, since readers take a trial with a key for a labelled one. False if
        the trial is lost (another process ended it): it is given up untrained."""
        attrs = identity_attrs(config, protocol=protocol, split=split)
        try:
            for attr, value in sorted(attrs.items(), key=lambda item: item[0] == "key"):
                self._trial.set_user_attr(attr, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._store.fail_running([self.trial_id])  # no longer held: it is FAIL already
            return False
        return True

    def report(self, epoch: int, accuracy: float) -> bool:
        """Tell the pruner this epoch's accuracy; False if the trial is lost (another process
        took this one for dead and ended it): stop training it, its result will be dropped."""
        try:
            self._trial.report(accuracy, epoch)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True

    def should_prune(self) -> bool:
        return self._trial.should_prune()

    def tell_known(self, value: float, key: str) -> bool:
        """Complete a proposal that repeats a trained configuration with its known result.

        The trial gets no identity attributes, so hpstudy's records ignore it; the sampler
        (TPE models COMPLETE trials' values) learns that the point is known and how good.
        False if the trial is lost (another process ended it): nothing is told."""
        try:
            self._trial.set_user_attr(REPEAT_ATTR, key)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._store.fail_running([self.trial_id])  # no longer held: it is FAIL already
            return False
        return self._store.tell(self._trial, value)


class Searcher:
    """Asks the store's study for trials with a TPE sampler and a pruner."""

    def __init__(self, store: Store, space: dict[str, Domain], *, sampler_seed: int,
                 pruner: str) -> None:  # fmt: skip
        self.store, self.space, self.distributions = store, space, distributions_of(space)
        self.names = searched(space)
        store.use_sampler(make_sampler(sampler_seed), make_pruner(pruner))

    def factors(self, params: dict[str, Any], space: dict[str, Domain]) -> dict[str, Any]:
        """The factor values behind a trial's Optuna params: a listed value by its param
        (topology 'T4' -> its widths), a range's param as it is (lr 0.0123, depth 3)."""
        return {name: _value(name, space[name], params[name]) for name in self.names
                if name in params}  # fmt: skip

    def ask(self) -> SearchTrial:
        """A proposal (or the oldest enqueued trial), its params suggested in factor order so
        that a factor is sampled only where it applies (momentum once the optimizer is SGD)."""
        while True:
            trial = self.store.ask()
            try:
                for name in self.names:
                    if FACTORS[name].applies(trial.params.get("optimizer", "")):
                        _suggest(trial, name, self.distributions[name])
            except optuna.exceptions.UpdateFinishedTrialError:
                # Taken for dead while this process was paused: an untrained proposal, FAIL
                # already; ask for another.
                self.store.fail_running([trial._trial_id])
                continue
            return SearchTrial(trial, self.store)

    def drop(self, trial: SearchTrial, reason: str) -> None:
        """Give up an unlabelled proposal (one this round already holds): FAIL, unseen by TPE."""
        self.store.discard(trial.trial_id, reason)

    def n_told(self) -> int:
        """Proposals completed with a known result (`SearchTrial.tell_known`) so far."""
        return sum(REPEAT_ATTR in t.user_attrs for t in self.store.frozen_trials())

    def ask_fixed(self, config: Config, *, protocol: str, split: dict) -> SearchTrial | None:
        """A trial for `config` exactly (another seed of a proposed configuration), created
        RUNNING with its identity; None when another process already holds that trial (two
        workers completing the same missing seed at once: the lower trial number trains it)."""
        trial_id = self.store.create_running(config, protocol=protocol, split=split,
                                             space=self.space)  # fmt: skip
        holder = self.store.first_holder(trial_id, trial_key(config, split))
        if holder is not None:
            self.store.discard(trial_id, f"duplicate of trial {holder}")
            return None
        return SearchTrial(self.store.trial_handle(trial_id), self.store)


def _suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> None:
    if isinstance(distribution, CategoricalDistribution):
        trial.suggest_categorical(name, distribution.choices)
    elif isinstance(distribution, IntDistribution):
        trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log)
    else:
        trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)


def _value(name: str, domain: Domain, param: Any) -> Any:
    if isinstance(domain, Range):
        return int(param) if domain.integer else float(param)
    return next(v for v in domain if FACTORS[name].param(v) == param)
