"""hpstudy: reproducible, statistically honest hyperparameter studies of PyTorch networks.

    >>> import hpstudy as hs
    >>> study = hs.load_study("digits").replace(max_epochs=5, n_seeds=3)
    >>> run = hs.run(study, out="runs/digits-5")
    >>> run.configs_df(), run.best
    >>> hs.open_run("runs/digits-5").trials_df()

The names below the first ones load on first use (PEP 562), so `import hpstudy` stays cheap: it
imports neither torch nor Optuna until something trains or reads a run (see `hpstudy.api`).
"""

from hpstudy.config.choices import ACTIVATIONS, OPTIMIZERS, TOPOLOGIES
from hpstudy.config.config import Config
from hpstudy.errors import DataError, UserError
from hpstudy.lazy import lazy_names

__version__ = "0.1.0"

# Public name -> the module that defines it, imported when the name is first used.
_LAZY = {
    "load_study": "hpstudy.config.studyfile",
    "Study": "hpstudy.config.study",
    "run": "hpstudy.api",
    "open_run": "hpstudy.api",
    "Run": "hpstudy.api",
    "Best": "hpstudy.api",
}

__all__ = [
    "ACTIVATIONS",
    "OPTIMIZERS",
    "TOPOLOGIES",
    "Best",
    "Config",
    "DataError",
    "Run",
    "Study",
    "UserError",
    "__version__",
    "load_study",
    "open_run",
    "run",
]

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
