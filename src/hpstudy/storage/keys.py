"""A trial's identity and its Optuna params: what makes two trials the same trial.

>>> key = trial_key(config, split)      # 20 hex digits: configuration + seed + split
>>> params_of(config)                    # {'topology': 'T4', 'optimizer': 'adam', ...}
>>> distributions_of(study.space)        # categorical for lists, float/int for ranges
>>> identity_attrs(config, protocol="staged", split=split)   # written once, with the trial
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hpstudy.config.config import Config
from hpstudy.config.factors import FACTORS, PAPER_FACTORS, Domain, Range, searched, value_of
from hpstudy.storage.records import SCHEMA_VERSION


def trial_key(config: Config, split: dict) -> str:
    """A trial's identity: the same configuration, seed and split is the same trial."""
    blob = json.dumps({"config": config.to_dict(), "split": split}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def topology_param(hidden: tuple[int, ...]) -> str:
    return FACTORS["topology"].param(hidden)


def params_of(config: Config, names: Sequence[str] = PAPER_FACTORS) -> dict[str, Any]:
    """The Optuna params of a configuration (what the dashboard and fANOVA see). A factor that
    does not apply to it (momentum for Adam: Config reset it) has no param, as in Optuna's
    conditional spaces, rather than a default its distribution may not hold."""
    return {name: FACTORS[name].param(value_of(config, name)) for name in names
            if FACTORS[name].applies(config.optimizer)}  # fmt: skip


def distributions_of(space: dict[str, Domain]) -> dict[str, BaseDistribution]:
    """One distribution per factor the space searches (params_of's keys for `searched(space)`):
    categorical over a list's params, float or integer (log-uniform if `log`) over a range."""
    return {name: _distribution(name, space[name]) for name in searched(space)}


def _distribution(name: str, domain: Domain) -> BaseDistribution:
    if isinstance(domain, Range):
        kind = IntDistribution if domain.integer else FloatDistribution
        return kind(domain.low, domain.high, log=domain.log)
    return CategoricalDistribution([FACTORS[name].param(v) for v in domain])


def identity_attrs(config: Config, *, protocol: str, split: dict) -> dict[str, Any]:
    """The user attributes that say which trial this is (written once, with the trial)."""
    return {
        "hpstudy_schema": SCHEMA_VERSION,
        "key": trial_key(config, split),
        "config": config.to_dict(),
        "seed": config.seed,
        "protocol": protocol,
        "split": split,
    }
