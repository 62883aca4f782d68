"""The population engine: many MLP or CNN configurations trained at once, each exactly as alone.

>>> from hpstudy.engine import make_split, train
>>> results = train(configs, make_split(...), make_split(...), device="cuda")
"""

from __future__ import annotations

from hpstudy.lazy import lazy_names

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

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
