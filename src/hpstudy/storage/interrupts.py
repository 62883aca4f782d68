"""Ctrl-C and SIGTERM that wait for the store to finish the write they land in.

    >>> with interrupts.installed():        # the CLI, around a command
    ...     with interrupts.deferred():     # the store, around each database session
    ...         ...                         # an interrupt here is raised when the block ends

Python raises KeyboardInterrupt between any two bytecodes. Inside SQLAlchemy that can stop a
connection half-way through its rollback, leaving SQLite's lock held by a connection nobody owns;
the clean-up that marks held trials interrupted then waits on that lock. So while the main thread
is in a database session, a signal is only noted, and raised when the session has closed.
SIGTERM takes the same path as Ctrl-C.

Both raise `Interrupted`, a KeyboardInterrupt of our own: CPython (3.11 at least) notes a plain
KeyboardInterrupt that passes through code run by exec() or eval() of a string (dataclasses and
SQLAlchemy build methods that way, also while a run imports lazily) as unhandled, and then ends
a `python -m hpstudy.cli` process by SIGINT at exit although the CLI caught it and returned 130.
The note compares the exact type, so a subclass keeps the exit status ours.

A signal stays pending until the command ends, because a raise can be lost: one that lands in a
finalizer (`__del__`, a weakref callback during garbage collection) cannot leave it, and Python
only reports it. So that report is kept quiet, and the end of every later `deferred()` block
that no exception is leaving raises it again, as does `raise_pending()` (the training's every
epoch).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"depth": 0, "pending": False}  # main thread only: signals are delivered there


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, raised by our handler (see the module's note on why not the base)."""


def _handle(signum, frame) -> None:
    _state["pending"] = True
    if not _state["depth"]:
        raise Interrupted


def _quiet_if_interrupted(previous):
    def hook(info) -> None:
        if not isinstance(info.exc_value, Interrupted):
            previous(info)  # an Interrupted lost in a finalizer stays pending: no report

    return hook


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted, deferred inside `deferred()` blocks."""
    if not _on_main_thread():
        yield
        return
    old = {s: signal.signal(s, _handle) for s in SIGNALS}
    old_hook, sys.unraisablehook = sys.unraisablehook, _quiet_if_interrupted(sys.unraisablehook)
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        sys.unraisablehook = old_hook
        _state["pending"] = False


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold an interrupt that arrives inside the block until the block has ended; raise one
    still pending then, unless an exception is leaving the block (it carries on instead)."""
    if not _on_main_thread():
        yield
        return
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        raise_pending()


def raise_pending() -> None:
    """Raise an interrupt still pending (one a finalizer swallowed), unless the main thread is
    in a database session or an exception is already on its way out."""
    in_flight = sys.exc_info()[1] is not None
    if _state["pending"] and not _state["depth"] and not in_flight and _on_main_thread():
        raise Interrupted
