"""The population engine: many MLP or CNN configurations trained at once, each exactly as alone.

>>> from hpstudy.engine import make_split, train
>>> results = train(configs, make_split(...), make_split(...), device="cuda")
"""

from __future__ import annotations

import importlib

# Where each public name lives: loaded on first use (PEP 562), so that reading what the engine
# returned (`results.Outcome`, as the store and the report do) does not load torch.
_LAZY = {
    "EpochEvent": "hpstudy.engine.training",
    "Evaluation": "hpstudy.engine.model",
    "Outcome": "hpstudy.engine.results",
    "Split": "hpstudy.engine.splits",
    "TrialResult": "hpstudy.engine.results",
    "batch_order": "hpstudy.engine.splits",
    "describe_device": "hpstudy.engine.training",
    "evaluate": "hpstudy.engine.model",
    "make_split": "hpstudy.engine.splits",
    "train": "hpstudy.engine.training",
}

__all__ = [*_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'hpstudy.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later uses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
