"""Download the four FashionMNIST (or MNIST, KMNIST) files from the official mirrors, verified.

    >>> from pathlib import Path
    >>> from hpstudy.data import download
    >>> download.fetch_all(Path("/tmp/fashion-mnist"))  # official mirrors, first that works
    PosixPath('/tmp/fashion-mnist')
    >>> download.fetch_all(Path("/tmp/fm"), mirrors=["http://127.0.0.1:8000/"], retries=0)
    PosixPath('/tmp/fm')
    >>> download.fetch_all(Path("/tmp/mnist"), source=catalog.MNIST)  # kept as the published .gz
    PosixPath('/tmp/mnist')

Mirrors are tried in order: `mirrors` if given, else `$HPSTUDY_MIRRORS` (comma-separated base URLs),
else `DEFAULT_MIRRORS`. Each file is `<base><name>.gz`. A file is kept only once the SHA-256 of its
decompressed bytes matches `fashion_mnist.SHA256`; it is stored decompressed (so `sha256sum` on the
cache shows the published digests and loading skips gunzip). (MNIST and KMNIST: the SHA-256 of the
.gz must match `catalog`'s table, and the .gz is kept as served.) Each file is written to a
temporary name in the same folder and renamed, so a reader never sees a partial file. An exclusive
lock on `<dest>/.lock` (the `filelock` package) serialises processes that download at once: the
second one says it is waiting, re-checks the cache after the first has finished and finds nothing
left to do (or gives up with a `DataError` after `lock_wait` seconds, should the first one hang).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from hpstudy.atomic import PART_SUFFIX, atomic_file
from hpstudy.data import catalog, fashion_mnist, idx
from hpstudy.errors import DataError

DEFAULT_MIRRORS: tuple[str, ...] = (
    # Zalando's S3 website bucket, the address the dataset's README gives first.
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    # The files committed in the dataset's GitHub repository.
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
MIRRORS_ENV = "HPSTUDY_MIRRORS"
# The largest file (train images) is 26 MB compressed; a larger response is not FashionMNIST and
# must not fill the memory.
_MAX_BYTES = 64 * 2**20
_CHUNK = 2**20
_LOCK_NAME = ".lock"
_LOCK_POLL = 0.2  # seconds between two tries for a lock that another process holds
_PART_SUFFIX = PART_SUFFIX  # what the leftovers of a killed download end with


class _MirrorFailure(Exception):
    """One mirror could not deliver one file; `retry` says whether asking again may help."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


def resolve_mirrors(
    mirrors: Sequence[str] | None = None,
    *,
    defaults: Sequence[str] = DEFAULT_MIRRORS,
    env: str = MIRRORS_ENV,
) -> list[str]:
    """The base URLs to try, in order, each ending in '/' (`defaults` and `env`: the dataset's)."""
    if mirrors is not None:
        raw, origin = list(mirrors), "the mirrors argument"
    elif os.environ.get(env, "").strip():
        raw, origin = os.environ[env].split(","), env
    else:
        raw, origin = list(defaults), "the default mirrors"
    bases = []
    for entry in (m.strip() for m in raw):
        if not entry:
            continue
        parts = urlsplit(entry)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DataError(
                f"{origin} holds {entry!r}, which is not an http(s) URL; give base URLs such as "
                f"{defaults[0]} separated by commas"
            )
        bases.append(entry if entry.endswith("/") else entry + "/")
    if not bases:
        raise DataError(f"{origin} names no mirror; give at least one http(s) base URL")
    return bases


def fetch_all(
    dest: Path,
    *,
    source: catalog.Source | None = None,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    total_timeout: float = 600.0,
    retries: int = 2,
    backoff: float = 1.0,
    lock_wait: float = 600.0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Make `dest` hold the four canonical files, downloading those missing or bad; return `dest`.

    `source` is the dataset (`catalog.MNIST`, `catalog.KMNIST`); None is FashionMNIST, checked
    against `fashion_mnist.SHA256`. A source whose published digests are of the .gz files is kept as
    those .gz files, byte for byte.

    `timeout` bounds each connect and each read (seconds); `total_timeout` bounds one attempt at
    one file as a whole (checked between reads, so it may run over by up to `timeout`), so that a
    server that trickles a byte now and then cannot hold a download forever; running over it is
    final for that mirror. `retries` is how many times one mirror is asked again for one file
    after a transient failure (a broken connection, a timeout, HTTP 5xx, a cut-off response; not
    a refused connection, an unknown host, bad content or `total_timeout`), waiting `backoff`,
    then twice that, and so on. A mirror that fails is not asked for the remaining files. Raises
    `DataError` naming every mirror tried and why it failed.

    If another process holds the folder's lock, `progress` is told once that we wait, and after
    `lock_wait` seconds (0: do not wait) `DataError` names the lock file.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got timeout={timeout}")
    if total_timeout <= 0:
        raise ValueError(f"total_timeout must be > 0 seconds, got total_timeout={total_timeout}")
    if lock_wait < 0:
        raise ValueError(f"lock_wait must be >= 0 seconds, got lock_wait={lock_wait}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got retries={retries}")
    src = source or _fashion()
    bases = resolve_mirrors(mirrors, defaults=src.mirrors, env=src.mirrors_env)
    how = fashion_mnist.how_to_provide() if source is None else src.how_to_provide()
    say = progress or (lambda _line: None)
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the cache folder {dest}: {exc.strerror}; {how}") from exc
    with _locked(dest, lock_wait, say, how):
        _remove_stale_parts(dest)
        failures: dict[str, str] = {}  # base URL -> why it failed (it is skipped from then on)
        for name in src.files:
            # Checked under the lock: another process may have fetched it while we waited.
            if _is_cached(dest, name, source):
                continue
            try:
                raw, content = _fetch_one(
                    name, src, bases, failures, (timeout, total_timeout), retries, backoff, say
                )
            except _MirrorFailure as exc:  # every mirror failed: `exc` says how each did
                raise DataError(f"could not download {src.title}: {exc}; {how}") from exc
            target = dest / (f"{name}.gz" if src.keeps_gz else name)
            _write_atomic(target, raw if src.keeps_gz else content, how)
            say(f"saved {target} (sha256 verified)")
    return dest


def _fashion() -> catalog.Source:
    """FashionMNIST as a source, read from `fashion_mnist` at call time (tests patch it)."""
    return catalog.Source(
        name="fashion-mnist",
        title="FashionMNIST",
        class_names=fashion_mnist.CLASS_NAMES,
        mirrors=DEFAULT_MIRRORS,
        mirrors_env=MIRRORS_ENV,
        sha256=fashion_mnist.SHA256,
    )


def _fetch_one(
    name: str,
    src: catalog.Source,
    bases: list[str],
    failures: dict[str, str],
    timeouts: tuple[float, float],
    retries: int,
    backoff: float,
    say: Callable[[str], None],
) -> tuple[bytes, bytes]:
    """(as served, decompressed) `name`, verified, from the first mirror that delivers it;
    `_MirrorFailure` naming every mirror tried and why it failed when none does."""
    for base in bases:
        if base in failures:
            continue
        url = f"{base}{name}.gz"
        say(f"downloading {url}")
        try:
            return _download_verified(url, name, src, timeouts, retries, backoff)
        except _MirrorFailure as exc:
            failures[base] = f"{name}.gz: {exc}"
            say(f"  failed: {exc}")
    tried = "; ".join(f"{base} ({why})" for base, why in failures.items())
    raise _MirrorFailure(tried, retry=False)


def _download_verified(
    url: str,
    name: str,
    src: catalog.Source,
    timeouts: tuple[float, float],
    retries: int,
    backoff: float,
) -> tuple[bytes, bytes]:
    """`timeouts` is (per connect or read, per attempt in all), in seconds."""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            raw = _get(url, *timeouts)
            return raw, _verify(name, raw, src)
        except _MirrorFailure as exc:
            if not exc.retry:
                raise
            if attempt == retries:
                suffix = f" ({attempt + 1} attempts)" if attempt else ""
                raise _MirrorFailure(f"{exc}{suffix}", retry=False) from exc
    raise AssertionError("unreachable: the last attempt returns or raises")


def _get(url: str, timeout: float, total_timeout: float) -> bytes:
    """The body of `url`, read in chunks with a size cap, a time limit and a completeness check."""
    request = urllib.request.Request(url, headers={"User-Agent": "hpstudy"})
    deadline = time.monotonic() + total_timeout
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            expected = int(declared) if declared and declared.isdigit() else None
            if expected is not None and expected > _MAX_BYTES:
                raise _MirrorFailure(f"response of {expected:,} bytes is too large", retry=False)
            chunks, n_read = [], 0
            # read1, not read: read(n) blocks until it has all n bytes, so a trickle of one byte
            # per `timeout` would never reach the deadline check.
            while chunk := response.read1(_CHUNK):
                chunks.append(chunk)
                n_read += len(chunk)
                if n_read > _MAX_BYTES:
                    raise _MirrorFailure(f"response exceeds {_MAX_BYTES:,} bytes", retry=False)
                if time.monotonic() > deadline:
                    of = f" of {expected:,}" if expected is not None else ""
                    # Final: a mirror this slow would only use up the same time again.
                    raise _MirrorFailure(
                        f"took longer than {total_timeout:g} s in all ({n_read:,}{of} bytes)",
                        retry=False,
                    )
    except urllib.error.HTTPError as exc:
        exc.close()
        # 5xx and 429 are the server's passing trouble; other codes (404...) will not change.
        raise _MirrorFailure(
            f"HTTP {exc.code} {exc.reason}", retry=exc.code >= 500 or exc.code == 429
        ) from exc
    except urllib.error.URLError as exc:  # refused, DNS, TLS, connect timeout
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise _MirrorFailure(f"timed out after {timeout:g} s", retry=True) from exc
        # Nothing listening, or no such host: asking again a second later will not change that,
        # and without a network it would only delay the message that says what to do.
        final = isinstance(reason, ConnectionRefusedError | socket.gaierror)
        text = getattr(reason, "strerror", None) or str(reason)
        raise _MirrorFailure(text, retry=not final) from exc
    except TimeoutError as exc:
        raise _MirrorFailure(f"timed out after {timeout:g} s", retry=True) from exc
    except (http.client.HTTPException, OSError) as exc:
        raise _MirrorFailure(f"connection broke: {exc!r}", retry=True) from exc
    if expected is not None and n_read != expected:
        raise _MirrorFailure(f"response cut off at {n_read:,} of {expected:,} bytes", retry=True)
    return b"".join(chunks)


def _verify(name: str, raw: bytes, src: catalog.Source) -> bytes:
    """`raw` decompressed, if it (or its decompressed bytes) has `src`'s digest of `name`."""
    # Inflating stops one byte past the canonical size: a small gzip that inflates to gigabytes
    # costs no more memory than the real file.
    limit = fashion_mnist.idx_size(name)
    try:
        content = idx.gunzip(raw, limit)
    except EOFError as exc:  # a cut-off stream may be a broken transfer: worth another try
        raise _MirrorFailure(f"gzip stream truncated at {len(raw):,} bytes", retry=True) from exc
    except (OSError, zlib.error) as exc:
        raise _MirrorFailure(f"damaged gzip stream ({exc})", retry=False) from exc
    if len(content) > limit:
        # Damaged deflate data can inflate past the end as well as a bomb can; say both.
        raise _MirrorFailure(
            f"damaged gzip stream or gzip bomb: its {len(raw):,} bytes inflate past the "
            f"{limit:,} bytes of {name}; not decompressed further",
            retry=False,
        )
    problem = src.mismatch(name, raw, content)
    if problem is not None:
        raise _MirrorFailure(problem, retry=False)
    return content


def _is_cached(folder: Path, name: str, source: catalog.Source | None = None) -> bool:
    """Whether `folder` holds a verified `name`; a bad copy is removed (the cache is ours)."""
    path = idx.find_file(folder, name)
    if path is None:
        return False
    try:
        if source is None:
            fashion_mnist.read_canonical(path, name)
        else:
            catalog.read_verified(source, path, name)
    except DataError:
        path.unlink(missing_ok=True)
        return _is_cached(folder, name, source)  # name.gz may sit beside a bad name
    return True


def _write_atomic(path: Path, content: bytes, how: str) -> None:
    """Write `content` to a temporary file beside `path`, then rename it over `path`."""
    try:
        # fsync: the rename must never expose a file whose bytes are not on disk.
        with atomic_file(path, fsync=True) as fh:
            fh.write(content)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror}; free some space or {how}") from exc


def _remove_stale_parts(folder: Path) -> None:
    """Temporary files left by a process that was killed (only called under the lock)."""
    for stale in folder.glob(f".*{_PART_SUFFIX}"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(folder: Path, wait: float, say: Callable[[str], None], how: str) -> Iterator[None]:
    """An exclusive lock on `folder` across processes (the `filelock` package: `flock` on POSIX,
    `msvcrt` locking on Windows). Waits at most `wait` seconds for another process that holds it,
    then raises `DataError`."""
    from filelock import FileLock, Timeout

    path = folder / _LOCK_NAME
    lock = FileLock(path)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            # Said once: a process that hangs while it holds the lock must not leave us waiting
            # silently.
            say(f"waiting for another process that is downloading into {folder} ...")
            try:
                lock.acquire(timeout=wait, poll_interval=_LOCK_POLL)
            except Timeout:
                raise DataError(
                    f"another process holds the lock {path} and has not released it in "
                    f"{wait:g} s; wait for it to finish or stop it, then try again (the lock "
                    "goes away when that process exits: there is no stale lock file to delete)"
                ) from None
    except OSError as exc:
        raise DataError(f"cannot create the lock file {path}: {exc.strerror}; {how}") from exc
    try:
        yield
    finally:
        lock.release()
