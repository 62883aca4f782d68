"""Opening Optuna's storage for a URL: its RDB storage (SQLite, PostgreSQL) with heartbeats, or
its journal file (journal:///path, no server), and the one patch hpstudy makes to Optuna.

    >>> storage = open_storage("sqlite:///runs/paper/study.db", heartbeat_s=5, grace_s=30)
    >>> is_journal("journal:///shared/grid.log"), journal_path("journal:///shared/grid.log")
    >>> defer_interrupts_in_sessions()   # once, by the first Store: sessions open and close whole

A SQLite store runs in WAL mode with synchronous=NORMAL (`SQLITE_PRAGMAS`, set on every
connection): a commit is a write, not several waits for the disk.
"""

from __future__ import annotations

import contextlib
import importlib
import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage

from hpstudy.errors import UserError
from hpstudy.storage import GRACE_S, HEARTBEAT_S, interrupts
from hpstudy.storage.urls import _with_driver, explain_storage_error, redact_url

_patched: list[bool] = []  # the session patch below, once installed


def defer_interrupts_in_sessions() -> None:
    """Make every Optuna database session open and close whole (see `hpstudy.storage.interrupts`)
    and end a damaged, full or read-only store as one UserError line naming its file, wherever
    Optuna meets it (its StorageInternalError would otherwise reach the user raw). Installed
    once, by the first Store, not at import (importing hpstudy changes nothing)."""
    if _patched:
        return
    rdb = importlib.import_module("optuna.storages._rdb.storage")
    open_session = rdb._create_scoped_session

    @contextlib.contextmanager
    def session_deferring_interrupts(scoped: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            with interrupts.deferred(), open_session(scoped, *args, **kwargs) as session:
                yield session
        except Exception as exc:
            bind = scoped.session_factory.kw.get("bind")  # the engine: its URL names the file
            url = bind.url.render_as_string(hide_password=True) if bind is not None else ""
            error = explain_storage_error(exc, url, known_only=True)
            if error is None:
                raise
            raise error from exc

    rdb._create_scoped_session = session_deferring_interrupts
    _patched.append(True)


JOURNAL_PREFIX = "journal://"  # journal:///abs/path: Optuna's journal file storage


def is_journal(url: str) -> bool:
    return url.startswith(JOURNAL_PREFIX)


def journal_path(url: str) -> str:
    """The file a journal URL names: journal:///shared/x.log -> /shared/x.log."""
    path = url.removeprefix(JOURNAL_PREFIX)
    if not path:
        raise UserError(f"storage {url!r} names no file; give journal:///path/to/study.log")
    return path


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S, *,
                 wal: bool = True) -> Any:  # fmt: skip
    """Optuna's storage for a URL: its journal file for journal:///path (no server; the file on
    a shared file system), else its RDB storage (SQLite, PostgreSQL). `wal=False`: a reader,
    which leaves a SQLite file's journal mode as it finds it (see `end_wal`)."""
    if is_journal(url):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(journal_path(url))
        if not path.parent.is_dir():
            raise UserError(f"cannot open storage {url!r}: folder {path.parent} does not "
                            "exist; create it on the shared file system first")  # fmt: skip
        return JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Writers wait for each other instead of failing with "database is locked".
        kwargs = {"connect_args": {"timeout": 60}}
    storage = _open_storage(_with_driver(url), kwargs, heartbeat_s, grace_s)
    if url.startswith("sqlite") and wal:
        import sqlalchemy

        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # those Optuna opened to build its tables: reopened with them
    return storage


# Set on every SQLite connection. WAL: a commit appends to study.db-wal instead of rewriting
# pages through a rollback journal, readers never block the writer, and a process killed at any
# moment leaves every committed transaction (the next opener replays the log). NORMAL: the disk
# is flushed at checkpoints, not at every commit, so a power cut or OS crash may lose the last
# commits (trials then re-done), never corrupt the file. Together a commit costs a write instead
# of several fsyncs (docs/results.md). WAL needs every process on one machine (shared memory):
# across machines use PostgreSQL or a journal file.
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL")


def end_wal(storage: Any) -> None:
    """Fold a SQLite store's write-ahead log into its file and return it to a rollback journal,
    for readers: a WAL-mode file on read-only media (an archived run folder, a read-only
    mount) cannot be opened at all, and a copy of the folder without its -wal file would miss
    the last commits. Only the store's last user may call this (a run holding its folder's
    lock); a file other processes have open stays in WAL mode, which is harmless. Later
    connections of this storage no longer ask for WAL."""
    import sqlalchemy

    engine = getattr(storage, "engine", None)
    if engine is None or engine.url.get_backend_name() != "sqlite":
        return
    if sqlalchemy.event.contains(engine, "connect", _sqlite_pragmas):
        sqlalchemy.event.remove(engine, "connect", _sqlite_pragmas)
    engine.dispose()  # the pool's connections: journal_mode changes only with none open
    with contextlib.suppress(Exception), engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=DELETE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            # A read-only file keeps its journal mode: only speed is lost, so say nothing.
            with contextlib.suppress(Exception):
                cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


def _open_storage(url: str, kwargs: dict, heartbeat_s: int, grace_s: int) -> RDBStorage:
    """RDBStorage, retried: workers starting together on an empty database race to create
    Optuna's tables, and all but one see a unique-constraint error the first time."""
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s,
                                  grace_period=grace_s)  # fmt: skip
        except ImportError as exc:
            raise UserError(f"cannot open storage {redact_url(url)!r}: {exc}; for PostgreSQL "
                            "`pip install 'hpstudy[postgres]'`") from exc  # fmt: skip
        except UserError:
            raise  # a damaged store, said in one line by the session (defer_interrupts_in_sessions)
        except Exception as exc:  # sqlalchemy's OperationalError, IntegrityError and friends
            if attempt == 5 or ("exists" not in str(exc) and "duplicate" not in str(exc)):
                if url.startswith("sqlite") and (error := explain_storage_error(exc, url)):
                    raise error from exc
                first = str(exc).splitlines()[0]
                raise UserError(f"cannot open storage {redact_url(url)!r}: {first}; check the "
                                "URL and that the database server is running") from exc  # fmt: skip
            time.sleep(0.2 + random.random() * attempt)
    raise AssertionError("unreachable")
