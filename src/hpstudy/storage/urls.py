"""Storage URLs: built from paths safely, refused when they cannot outlive the process, and
shown without their password; storage failures as one line.

    >>> default_url("runs/a?b")                  # 'sqlite:////.../runs/a%3Fb/study.db'
    >>> redact_url("postgresql://u:s3cret@host/db")   # 'postgresql://u@host/db'
    >>> with storage_errors(url): ...            # SQLite's complaint -> one UserError line
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from hpstudy.errors import UserError


def default_url(run_dir: str | Path) -> str:
    """The SQLite URL of a run folder's study.db. Built, not formatted: '?', '#' and '%' in a
    folder name are quoted, so the URL names that file and no other."""
    from sqlalchemy.engine import URL

    path = Path(run_dir).resolve() / "study.db"
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def check_durable(url: str) -> None:
    """Refuse a storage that forgets everything when the process ends (SQLite in memory)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # _open_storage says what is wrong with it
    in_memory = parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed)
    if parsed.get_backend_name() == "sqlite" and in_memory:
        raise UserError(f"storage {url!r} keeps nothing after the process ends; give --storage "
                        "a file (sqlite:////path/study.db) or a database server, or leave "
                        "--storage out to use study.db in the run folder")  # fmt: skip


def sqlite_file(url: str) -> str:
    """The file a SQLite URL names (for messages); the redacted URL for other storages."""
    from sqlalchemy.engine import make_url

    with contextlib.suppress(Exception):
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            return parsed.database
    return redact_url(url)


def missing_sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names, if it does not exist; None for an existing file, a database
    server, or a URL that names no file. Opening a missing SQLite file creates it, so a reader
    asks this first."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if parsed.query.get("uri") in ("true", "1"):  # sqlite:///file:path?mode=ro&uri=true
        database = database.removeprefix("file:")
    path = Path(database)
    return None if path.exists() else path


def explain_storage_error(
    exc: BaseException, url: str, *, known_only: bool = False
) -> UserError | None:
    """One line for what SQLite or the database server said, naming the file and the fix;
    None when `exc` is not a storage error. `known_only`: None as well unless the store is
    damaged, full or read-only (a lock timeout or a constraint is Optuna's to handle)."""
    cause = _database_error(exc)
    if cause is None:
        return None
    where, reason = sqlite_file(url), str(cause.orig or cause).splitlines()[0]
    lower = reason.lower()
    if "malformed" in lower or "not a database" in lower or "corrupt" in lower:
        todo = ("move it aside and rerun `hpstudy run` with the same --out to start the study "
                "again, or put back a copy from a backup")  # fmt: skip
        return UserError(f"{where} is damaged ({reason}); {todo}")
    if "full" in lower or "disk i/o" in lower:
        return UserError(f"cannot write {where} ({reason}); free some space and rerun the same "
                         "command: finished trials are kept")  # fmt: skip
    if "readonly" in lower or "read-only" in lower or "unable to open" in lower:
        return UserError(f"cannot write {where} ({reason}); make it and its folder writable, "
                         "or give --out a folder you can write to")  # fmt: skip
    if known_only:
        return None
    return UserError(f"storage {where} failed ({reason}); check it and rerun the same command")


def _database_error(exc: BaseException):
    """The DBAPIError behind `exc`: itself, or the one Optuna wrapped in StorageInternalError
    (its sessions turn every SQLAlchemy error at commit into one)."""
    from sqlalchemy.exc import DBAPIError

    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, DBAPIError):
            return candidate
    return None


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn a storage failure inside the block into one UserError line (the CLI prints it)."""
    try:
        yield
    except Exception as exc:
        error = explain_storage_error(exc, url)
        if error is None:
            raise
        raise error from exc


def _with_driver(url: str) -> str:
    """Name an installed PostgreSQL driver: SQLAlchemy 2.1 defaults to psycopg 3, hpstudy's extra
    installs psycopg2-binary."""
    import importlib.util

    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            rest = url.removeprefix(prefix)
            if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
                return "postgresql+psycopg2://" + rest
            return "postgresql://" + rest
    return url


def redact_url(url: str) -> str:
    """The storage URL without its password, fit for run.json, reports and messages.

        >>> redact_url("postgresql://u:s3cret@host/db")
        'postgresql://u@host/db'

    A URL without a password (sqlite:///..., postgresql://u@host/db) comes back unchanged; one
    SQLAlchemy cannot parse comes back as it is (no store could have been opened with it).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.password is None and "password" not in parsed.query:
        return url  # as given: rendering would re-quote some URLs (e.g. ?host=/tmp/sock)
    # URL.set() ignores None values; SQLAlchemy documents _replace() for clearing a field.
    parsed = parsed._replace(password=None).difference_update_query(["password"])
    return parsed.render_as_string(hide_password=False)


def redact_args(args: Sequence[str], url: str | None) -> list[str]:
    """A command line with the storage URL's password removed wherever the URL appears
    (`--storage URL` and `--storage=URL`)."""
    safe = redact_url(url) if url else url
    if not url or safe == url:
        return list(args)
    return [arg.replace(url, safe) for arg in args]
