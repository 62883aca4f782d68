"""The population engine: many MLP or CNN configurations trained at once, each exactly as alone.

>>> from hpstudy.engine import make_split, train
>>> results = train(configs, make_split(...), make_split(...), device="cuda")
"""

from hpstudy.engine.model import Evaluation, evaluate
from hpstudy.engine.results import Outcome, TrialResult
from hpstudy.engine.splits import Split, batch_order, make_split
from hpstudy.engine.training import EpochEvent, describe_device, train

__all__ = [
    "EpochEvent",
    "Evaluation",
    "Outcome",
    "Split",
    "TrialResult",
    "batch_order",
    "describe_device",
    "evaluate",
    "make_split",
    "train",
]
