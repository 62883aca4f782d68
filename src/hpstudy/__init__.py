"""hpstudy: reproducible, statistically honest hyperparameter studies of PyTorch networks."""

from hpstudy.config.config import ACTIVATIONS, OPTIMIZERS, TOPOLOGIES, Config
from hpstudy.errors import DataError, UserError

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "OPTIMIZERS",
    "TOPOLOGIES",
    "Config",
    "DataError",
    "UserError",
    "__version__",
]
