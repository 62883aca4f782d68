"""Names a package loads on first use (PEP 562), so importing it stays cheap.

    >>> _LAZY = {"Store": "hpstudy.storage.store"}          # public name -> its module
    >>> __getattr__, __dir__ = lazy_names(__name__, _LAZY)  # at the bottom of the package

`import hpstudy` loads neither torch nor Optuna, importing one light module of `hpstudy.storage`
does not load the store, and reading a stored outcome through `hpstudy.engine` does not load
torch: each of those packages names its public names in `_LAZY` and loads them here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_names(package: str, names: dict[str, str]) -> tuple[Callable, Callable]:
    """The module-level `__getattr__` and `__dir__` of `package` for `names` (name -> module)."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        setattr(sys.modules[package], name, value)  # later uses skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
