"""Parameter importances of a study's complete trials: Optuna's fANOVA (or PED-ANOVA).

    >>> found = param_importances(store, ["topology", "optimizer", "lr", "activation"])
    >>> found.values, found.method, found.reason

fANOVA fits a random forest to (params -> value), which needs scikit-learn; without it the report
says so and uses Optuna's PED-ANOVA instead (no extra dependency), named as such. A factor with
one value among the trials has no variance to explain and is left out, and so is one that only
some trials have (momentum: a param of SGD's trials alone), with the reason given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import optuna

from hpstudy.storage.search import REPEAT_ATTR
from hpstudy.storage.store import Store


@dataclass(frozen=True)
class Importances:
    values: dict[str, float]  # factor -> share of variance explained, summing to 1
    method: str  # the evaluator that computed them
    reason: str = ""  # why there are none, or why the method is not fANOVA


def param_importances(store: Store, factors: Sequence[str], seed: int = 0) -> Importances:
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    complete = store.frozen_trials(states=(optuna.trial.TrialState.COMPLETE,))
    # A search's repeated proposals are told their configuration's known result so the
    # sampler learns; counted here they would weigh that configuration twice.
    complete = [t for t in complete if REPEAT_ATTR not in t.user_attrs]
    varied = [f for f in factors if len({t.params.get(f) for t in complete}) > 1]
    # A conditional param (momentum: SGD's trials only) would make Optuna keep only the trials
    # that have it, and the optimizer would then explain nothing: leave it out, and say so.
    partial = [f for f in varied if any(f not in t.params for t in complete)]
    varied = [f for f in varied if f not in partial]
    if len(complete) < 4 or not varied:
        reason = f"too few complete trials with varied factors ({len(complete)} complete)"
        return Importances({}, "fANOVA", reason)
    method, reason = "fANOVA", ""
    if partial:
        reason = (f"{', '.join(partial)} left out: only the trials of the optimizer it applies "
                  "to have it, and the evaluator needs every trial to")  # fmt: skip
    try:
        evaluator = FanovaImportanceEvaluator(seed=seed)
    except ImportError:
        method = "PED-ANOVA"
        reason = "; ".join(filter(None, ["fANOVA needs scikit-learn (`pip install scikit-learn`), "
                                         "which is not installed", reason]))  # fmt: skip
        evaluator = PedAnovaImportanceEvaluator()
    try:
        only = optuna.create_study(direction="maximize")  # in memory: these trials alone
        only.add_trials(complete)
        found = optuna.importance.get_param_importances(only, evaluator=evaluator, params=varied)
    except (ValueError, RuntimeError) as exc:  # optuna's message says what it lacked
        return Importances({}, method, f"{method} could not run: {exc}")
    return Importances({k: float(v) for k, v in found.items()}, method, reason)
