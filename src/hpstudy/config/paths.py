"""Paths a user types: '~' expanded, and every OS error about them as one line.

    >>> path = user_path("~/data/mine.npz", "[data] path")       # Path('/home/me/data/mine.npz')
    >>> user_path("~nosuchuser/x.npz", "[data] path")
    UserError: [data] path '~nosuchuser/x.npz': cannot expand '~nosuchuser' (no such user); ...
    >>> with os_errors(path, "[data] path"):
    ...     path.is_dir()                                   # OSError -> one line naming the path

Every place that turns a user's text into a path asks this module, so `~user` and an OS refusal
(a name too long, a loop of links, a folder without permission) read the same everywhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from hpstudy.errors import UserError


def user_path(text: str | os.PathLike, what: str) -> Path:
    """`text` as a Path with '~' and '~user' expanded; a UserError naming `what` otherwise."""
    try:
        return Path(text).expanduser()
    except (RuntimeError, KeyError) as exc:  # pathlib: no home directory / no such user
        head = str(text).split("/", 1)[0]
        raise UserError(f"{what} {str(text)!r}: cannot expand {head!r} (no such user or no "
                        f"home directory: {exc}); give the path without '~' or with an existing "
                        "user's") from None  # fmt: skip
    except (TypeError, ValueError) as exc:  # a NUL byte, not a string
        raise UserError(f"{what} {text!r} is not a usable path ({exc})") from None


@contextlib.contextmanager
def os_errors(path: str | os.PathLike, what: str, error: type[UserError] = UserError,
              fix: str = "check the path and its permissions") -> Iterator[None]:  # fmt: skip
    """Turn an OSError (and the ValueError of a path holding a NUL byte) raised inside into
    `error`: one line naming `what`, the path and the system's reason."""
    try:
        yield
    except OSError as exc:
        raise error(f"{what} {str(path)!r}: {exc.strerror or exc}; {fix}") from exc
    except ValueError as exc:
        if "null" not in str(exc).lower():
            raise
        raise error(f"{what} {str(path)!r} is not a usable path ({exc}); {fix}") from exc
