"""Downloads against local mirrors on 127.0.0.1: fallback, verification, atomicity, locking.

No test here touches the internet: every mirror is an HTTP server (or a closed or silent port)
on 127.0.0.1 started by the test, and every cache lives under tmp_path.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hpstudy.cli import main
from hpstudy.data import download, fashion_mnist, sources
from hpstudy.errors import DataError

NAMES = list(fashion_mnist.FILES.values())
TRICKLE_PIECE = 16 * 2**10


@pytest.fixture(scope="module")
def gz_files() -> dict[str, bytes]:
    """URL path -> the real .gz bytes, as the official mirrors serve them."""
    return {f"/{name}.gz": (fashion_mnist.DEBIAN_DIR / f"{name}.gz").read_bytes() for name in NAMES}


@functools.cache
def _tampered(path: str, body: bytes) -> bytes:
    """A valid gzip whose content differs from the real file's by one bit (cached: it is slow)."""
    content = bytearray(gzip.decompress(body))
    content[-1] ^= 0x01
    return gzip.compress(bytes(content), compresslevel=1)


class Mirror:
    """An HTTP server on 127.0.0.1 in a thread. `mode` decides what it answers:

    good       the real files
    corrupt    the real files with a run of bytes flipped (a damaged gzip stream)
    tampered   a valid gzip of content that differs by one byte (only SHA-256 can tell)
    flaky      HTTP 503 on the first request for each file, then the real file
    truncated  a Content-Length of the whole file but only half of it, then a closed connection
    slow       the real files, each after `delay` seconds
    trickle    the real files in pieces of `TRICKLE_PIECE` bytes, `delay` seconds apart: every
               read is quick, the whole takes long
    """

    def __init__(self, files: dict[str, bytes], mode: str = "good", delay: float = 0.0) -> None:
        self.files, self.mode, self.delay = files, mode, delay
        self.requests: list[str] = []
        self._lock = threading.Lock()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with mirror._lock:
                    mirror.requests.append(self.path)
                    n_seen = mirror.requests.count(self.path)
                body = mirror.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                if mirror.mode == "flaky" and n_seen == 1:
                    self.send_error(503, "try again")
                    return
                if mirror.mode == "slow":
                    time.sleep(mirror.delay)
                if mirror.mode == "corrupt":
                    middle = len(body) // 2
                    damaged = bytes(b ^ 0xFF for b in body[middle : middle + 64])
                    body = body[:middle] + damaged + body[middle + 64 :]
                if mirror.mode == "tampered":
                    body = _tampered(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mirror.mode == "truncated":
                    body = body[: len(body) // 2]
                    self.close_connection = True
                if mirror.mode != "trickle":
                    self.wfile.write(body)
                    return
                self.close_connection = True
                try:
                    for start in range(0, len(body), TRICKLE_PIECE):
                        self.wfile.write(body[start : start + TRICKLE_PIECE])
                        time.sleep(mirror.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def log_message(self, *args) -> None:  # keep pytest's output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(gz_files) -> Iterator:
    """A factory: mirror("good"), mirror("corrupt"), ...; all are shut down after the test."""
    started: list[Mirror] = []

    def start(mode: str = "good", delay: float = 0.0) -> Mirror:
        started.append(Mirror(gz_files, mode, delay))
        return started[-1]

    yield start
    for m in started:
        m.close()


@pytest.fixture
def refusing_url() -> str:
    """A port on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections into its backlog and never answers: reads time out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"


@pytest.fixture
def cold_machine(tmp_path, monkeypatch) -> Path:
    """No Debian copy, no $HPSTUDY_DATA_DIR, an empty cache under tmp_path; returns the cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    monkeypatch.delenv(download.MIRRORS_ENV, raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    cache = fashion_mnist.cache_dir()
    assert cache.is_relative_to(tmp_path)
    return cache


def assert_canonical_cache(folder: Path) -> None:
    """The four files, uncompressed, with the published digests, and nothing else but the lock."""
    for name in NAMES:
        assert (
            hashlib.sha256((folder / name).read_bytes()).hexdigest() == fashion_mnist.SHA256[name]
        )
    assert sorted(p.name for p in folder.iterdir()) == sorted([*NAMES, ".lock"])


def test_falls_back_past_refusing_and_corrupt_mirrors(mirror, refusing_url, tmp_path):
    corrupt, good = mirror("corrupt"), mirror("good")
    lines: list[str] = []
    dest = tmp_path / "cache"
    result = download.fetch_all(
        dest, mirrors=[refusing_url, corrupt.url, good.url], retries=1, progress=lines.append
    )
    assert result == dest
    assert_canonical_cache(dest)
    # The corrupt mirror was asked once, failed verification and was not asked again.
    assert corrupt.requests == [f"/{NAMES[0]}.gz"]
    assert sorted(good.requests) == sorted(f"/{n}.gz" for n in NAMES)
    text = "\n".join(lines)
    assert "Connection refused" in text and "damaged gzip stream" in text


@pytest.mark.slow
def test_sha256_rejects_a_valid_gzip_of_wrong_content(mirror, tmp_path):
    tampered = mirror("tampered")
    dest = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        download.fetch_all(dest, mirrors=[tampered.url], retries=2, backoff=0)
    message = str(info.value)
    assert tampered.url in message and f"{NAMES[0]}.gz" in message
    assert f"expected {fashion_mnist.SHA256[NAMES[0]]}" in message
    assert len(tampered.requests) == 1  # bad content is not retried: it would come back the same
    # Nothing was kept: no data file, no temporary file.
    assert [p.name for p in dest.iterdir()] == [".lock"]


@pytest.mark.slow
def test_gzip_bomb_from_a_mirror_is_inflated_no_further_than_the_real_file(mirror, tmp_path):
    # 1.2 MB on disk, 1.2 GB inflated: smaller than the real file, so only inflating can tell.
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(2**20)
    bomb = b"".join([*(packer.compress(zeros) for _ in range(1200)), packer.flush()])
    bomber = Mirror({f"/{NAMES[0]}.gz": bomb})
    try:
        tracemalloc.start()
        with pytest.raises(DataError) as info:
            download.fetch_all(tmp_path / "cache", mirrors=[bomber.url], retries=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        bomber.close()
    limit = fashion_mnist.idx_size(NAMES[0])
    assert f"inflate past the {limit:,} bytes of {NAMES[0]}" in str(info.value)
    assert peak < 3 * limit, f"held {peak:,} bytes for a file of {limit:,}"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".lock"]


@pytest.mark.slow  # 1.3 to 2.2 s here: the fast tier stays under a minute
def test_sha256_fallback_keeps_only_the_verified_copy(mirror, tmp_path):
    tampered, good = mirror("tampered"), mirror("good")
    dest = download.fetch_all(tmp_path / "c", mirrors=[tampered.url, good.url], retries=0)
    assert_canonical_cache(dest)
    assert len(tampered.requests) == 1


def test_retries_a_flaky_mirror_then_succeeds(mirror, tmp_path):
    flaky = mirror("flaky")
    dest = download.fetch_all(tmp_path / "c", mirrors=[flaky.url], retries=1, backoff=0)
    assert_canonical_cache(dest)
    assert len(flaky.requests) == 8  # every file: a 503, then the file


def test_without_retries_a_flaky_mirror_is_left_for_the_next(mirror, tmp_path):
    flaky, good = mirror("flaky"), mirror("good")
    download.fetch_all(tmp_path / "c", mirrors=[flaky.url, good.url], retries=0)
    assert_canonical_cache(tmp_path / "c")
    assert len(flaky.requests) == 1 and len(good.requests) == 4


def test_cut_off_response_is_retried_then_abandoned(mirror, tmp_path):
    truncated, good = mirror("truncated"), mirror("good")
    lines: list[str] = []
    download.fetch_all(
        tmp_path / "c",
        mirrors=[truncated.url, good.url],
        retries=1,
        backoff=0,
        progress=lines.append,
    )
    assert_canonical_cache(tmp_path / "c")
    assert truncated.requests == [f"/{NAMES[0]}.gz"] * 2
    assert any("(2 attempts)" in line for line in lines), lines


@pytest.mark.slow  # waits out one 1.5 s timeout
def test_timeout_moves_on(mirror, silent_url, tmp_path):
    good = mirror("good")
    lines: list[str] = []
    download.fetch_all(
        tmp_path / "c",
        mirrors=[silent_url, good.url],
        timeout=1.5,  # also each read from the good mirror: a loaded machine's server is slow
        retries=0,
        progress=lines.append,
    )
    assert_canonical_cache(tmp_path / "c")
    # One timeout, not one per file: counted in what it said, not on a clock a busy machine skews.
    assert sum("timed out after 1.5 s" in line for line in lines) == 1, lines


def test_resumes_and_replaces_a_bad_cached_file(mirror, tmp_path):
    good = mirror("good")
    dest = tmp_path / "c"
    dest.mkdir()
    # A killed earlier run: one verified file, one damaged file, one stale temporary file.
    (dest / NAMES[1]).write_bytes(
        gzip.decompress((fashion_mnist.DEBIAN_DIR / f"{NAMES[1]}.gz").read_bytes())
    )
    (dest / NAMES[3]).write_bytes(b"\x00\x00\x08\x01garbage")
    (dest / f".{NAMES[0]}.x1y2.part").write_bytes(b"half a file")
    download.fetch_all(dest, mirrors=[good.url], retries=0)
    assert_canonical_cache(dest)
    assert sorted(good.requests) == sorted(f"/{n}.gz" for n in (NAMES[0], NAMES[2], NAMES[3]))


def test_failure_midway_keeps_whole_files_only(mirror, gz_files, tmp_path):
    partial = mirror("good")
    partial.files = {k: v for k, v in gz_files.items() if k != f"/{NAMES[3]}.gz"}
    dest = tmp_path / "c"
    with pytest.raises(DataError, match=rf"{partial.url} \({NAMES[3]}\.gz: HTTP 404"):
        download.fetch_all(dest, mirrors=[partial.url], retries=3, backoff=0)
    assert partial.requests.count(f"/{NAMES[3]}.gz") == 1  # a 404 is final
    assert sorted(p.name for p in dest.iterdir()) == sorted([*NAMES[:3], ".lock"])
    for name in NAMES[:3]:
        assert hashlib.sha256((dest / name).read_bytes()).hexdigest() == fashion_mnist.SHA256[name]


def test_cli_downloads_into_the_cache_from_env_mirrors(
    mirror, refusing_url, cold_machine, capsys, monkeypatch
):
    good = mirror("good")
    monkeypatch.setenv(download.MIRRORS_ENV, f"{refusing_url}, {good.url.rstrip('/')}")
    assert main(["data", "verify"]) == 0
    captured = capsys.readouterr()
    assert f"verified in {cold_machine}" in captured.out
    assert f"saved {cold_machine / NAMES[0]} (sha256 verified)" in captured.err
    assert_canonical_cache(cold_machine)
    # The second run finds the cache and downloads nothing.
    assert main(["data", "verify"]) == 0
    assert len(good.requests) == 4
    assert sources.locate() == cold_machine


def test_no_files_and_no_network_lists_the_three_ways(
    refusing_url, cold_machine, capsys, monkeypatch
):
    monkeypatch.setenv(download.MIRRORS_ENV, refusing_url)
    code = main(["data", "verify"])
    err = capsys.readouterr().err.splitlines()
    assert code == 3
    message = err[-1]  # before it: the progress lines, one per attempt
    assert message.startswith("hpstudy data: error: could not download FashionMNIST: ")
    assert f"{refusing_url} ({NAMES[0]}.gz: Connection refused)" in message
    assert "(1) pass --data-dir DIR or set HPSTUDY_DATA_DIR=DIR" in message
    assert "(2) on Debian, `apt-get install dataset-fashion-mnist`" in message
    assert "(3) allow network access" in message and str(cold_machine) in message
    assert "Traceback" not in "\n".join(err)
    assert not [p for p in cold_machine.iterdir() if p.name != ".lock"]


def test_mirrors_from_env_and_default(monkeypatch):
    monkeypatch.setenv(download.MIRRORS_ENV, " http://a.example/x , ,https://b.example/y/")
    assert download.resolve_mirrors() == ["http://a.example/x/", "https://b.example/y/"]
    monkeypatch.delenv(download.MIRRORS_ENV)
    defaults = download.resolve_mirrors()
    assert len(defaults) >= 2 and all(url.endswith("/") for url in defaults)
    assert "fashion-mnist.s3-website.eu-central-1.amazonaws.com" in defaults[0]
    assert download.resolve_mirrors(["http://c.example"]) == ["http://c.example/"]


def test_bad_mirror_value_is_echoed(monkeypatch, tmp_path):
    monkeypatch.setenv(download.MIRRORS_ENV, "ftp://files.example/fm/")
    with pytest.raises(DataError, match=r"HPSTUDY_MIRRORS holds 'ftp://files.example/fm/'"):
        download.fetch_all(tmp_path / "c")
    with pytest.raises(ValueError, match="retries must be >= 0, got retries=-1"):
        download.fetch_all(tmp_path / "c", mirrors=["http://127.0.0.1:9/"], retries=-1)
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_trickling_mirror_is_abandoned_after_the_total_timeout(mirror, tmp_path):
    # 16 KiB every 50 ms: each read well within `timeout`, the 26 MB file would take ~80 s. The
    # total timeout also bounds each file from the good mirror, so it leaves a loaded machine room.
    trickle, good = mirror("trickle", delay=0.05), mirror("good")
    lines: list[str] = []
    download.fetch_all(
        tmp_path / "c",
        mirrors=[trickle.url, good.url],
        timeout=5,
        total_timeout=2,
        retries=2,
        backoff=0,
        progress=lines.append,
    )
    assert_canonical_cache(tmp_path / "c")
    assert trickle.requests == [f"/{NAMES[0]}.gz"]  # not retried: it would be as slow again
    size = len((fashion_mnist.DEBIAN_DIR / f"{NAMES[0]}.gz").read_bytes())
    reason = rf"took longer than 2 s in all \(([\d,]+) of {size:,} bytes\)"
    matches = [m for line in lines if (m := re.fullmatch(rf"  failed: {reason}", line))]
    assert len(matches) == 1, lines
    # Checked as the bytes arrive, not once per chunk of reading: a byte-by-byte trickle would
    # take forever to fill one chunk.
    assert int(matches[0][1].replace(",", "")) < download._CHUNK


def test_only_a_trickling_mirror_fails_with_the_reason(mirror, tmp_path):
    trickle = mirror("trickle", delay=0.01)
    dest = tmp_path / "c"
    with pytest.raises(
        DataError, match=rf"{trickle.url} \({NAMES[0]}\.gz: took longer than 0\.4 s"
    ):
        download.fetch_all(dest, mirrors=[trickle.url], timeout=5, total_timeout=0.4, retries=0)
    assert [p.name for p in dest.iterdir()] == [".lock"]


@pytest.mark.slow
def test_waits_for_a_held_lock_then_names_it(mirror, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    good = mirror("good")
    dest = tmp_path / "c"
    dest.mkdir()
    waiting = f"waiting for another process that is downloading into {dest} ..."
    held = open(dest / ".lock", "a+b")  # noqa: SIM115 - released by a timer below
    fcntl.flock(held, fcntl.LOCK_EX)  # another open file: flock conflicts as between processes
    lines: list[str] = []
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        download.fetch_all(dest, mirrors=[good.url], lock_wait=0.3, progress=lines.append)
    assert time.perf_counter() - start >= 0.3  # it waited (how much longer depends on the load)
    message = str(info.value)
    assert f"another process holds the lock {dest / '.lock'}" in message and "\n" not in message
    assert "wait for it to finish or stop it" in message
    assert lines == [waiting]  # said once, not once per poll
    assert [p.name for p in dest.iterdir()] == [".lock"] and good.requests == []
    # Released while we wait: the same call goes on and downloads.
    threading.Timer(0.3, held.close).start()
    lines.clear()
    download.fetch_all(dest, mirrors=[good.url], lock_wait=10, progress=lines.append)
    assert held.closed and lines[0] == waiting
    assert_canonical_cache(dest)


@pytest.mark.parametrize(
    ("kwargs", "echo"),
    [
        ({"total_timeout": 0}, "total_timeout must be > 0 seconds, got total_timeout=0"),
        ({"total_timeout": -1.5}, "total_timeout must be > 0 seconds, got total_timeout=-1.5"),
        ({"lock_wait": -0.1}, "lock_wait must be >= 0 seconds, got lock_wait=-0.1"),
    ],
)
def test_bad_time_limit_is_echoed(kwargs, echo, tmp_path):
    with pytest.raises(ValueError, match=re.escape(echo)):
        download.fetch_all(tmp_path / "c", mirrors=["http://127.0.0.1:9/"], **kwargs)
    assert not (tmp_path / "c").exists()


_FETCH = """
import sys
from pathlib import Path
from hpstudy.data import download
download.fetch_all(Path(sys.argv[1]), mirrors=[sys.argv[2]], retries=0)
"""


@pytest.mark.slow
def test_two_processes_downloading_at_once(mirror, tmp_path):
    # The delay keeps the first download in flight while the second process reaches the lock.
    slow = mirror("slow", delay=0.3)
    dest = tmp_path / "shared-cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _FETCH, str(dest), slow.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    assert_canonical_cache(dest)
    # One process downloaded; the other waited for the lock, re-checked and fetched nothing.
    assert sorted(slow.requests) == sorted(f"/{n}.gz" for n in NAMES)
