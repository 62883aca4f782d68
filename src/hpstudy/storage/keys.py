"""A trial's identity and its Optuna params: what makes two trials the same trial.

>>> key = trial_key(config, split)      # 20 hex digits: configuration + seed + split
>>> params_of(config)                    # {'topology': 'T4', 'optimizer': 'adam', ...}
>>> identity_attrs(config, protocol="staged", split=split)   # written once, with the trial
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from optuna.distributions import CategoricalDistribution

from hpstudy.space import Config, topology_name
from hpstudy.storage.records import SCHEMA_VERSION


def trial_key(config: Config, split: dict) -> str:
    """A trial's identity: the same configuration, seed and split is the same trial."""
    blob = json.dumps({"config": config.to_dict(), "split": split}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def topology_param(hidden: tuple[int, ...]) -> str:
    return topology_name(tuple(hidden)) or "-".join(map(str, hidden))


def params_of(config: Config) -> dict[str, Any]:
    """The Optuna params of a configuration (what the dashboard and fANOVA see)."""
    return {
        "topology": topology_param(config.topology),
        "optimizer": config.optimizer,
        "lr": config.lr,
        "activation": config.activation,
    }


def distributions_of(space: dict[str, tuple]) -> dict[str, CategoricalDistribution]:
    choices = {
        "topology": [topology_param(t) for t in space["topology"]],
        "optimizer": list(space["optimizer"]),
        "lr": list(space["lr"]),
        "activation": list(space["activation"]),
    }
    return {name: CategoricalDistribution(values) for name, values in choices.items()}


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
