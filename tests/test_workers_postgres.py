"""Several `hpstudy worker` processes share one grid study on a real PostgreSQL server."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from hpstudy.storage import Store, TrialStatus
from hpstudy.storage.rundir import load_trials
from tiny_studies import QUICK, hpstudy_cmd, subprocess_env, write_study

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


@contextlib.contextmanager
def postgres_server():
    """A throwaway PostgreSQL server (as the `postgres` OS user when we are root)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's "
                    "`postgresql` package to run the multi-worker tests")  # fmt: skip
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without `runuser`: cannot start PostgreSQL")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="hpstudy-pg-", dir="/tmp"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if as_user:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=100")  # fmt: skip
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
           "-w", "start")  # fmt: skip
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "hp")
        yield f"postgresql://postgres@127.0.0.1:{port}/hp"
    finally:
        with contextlib.suppress(Exception):
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _workers(study: Path, url: str, n: int, *extra: str) -> list[subprocess.Popen]:
    cmd = hpstudy_cmd("worker", str(study), "--storage", url, "--batch", "1", *QUICK, *extra)
    return [subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(n)]  # fmt: skip


def _assert_exactly_once(url: str, name: str, n_configs: int) -> list:
    records = load_trials(url, name)
    finished = [r for r in records if r.status is TrialStatus.FINISHED]
    assert len(finished) == n_configs
    assert len({r.key for r in finished}) == n_configs  # every configuration exactly once
    assert not [r for r in records if r.status in (TrialStatus.RUNNING, TrialStatus.WAITING)]
    return records


def test_workers_train_every_configuration_exactly_once(postgres_url, tmp_path):
    study = write_study(tmp_path, name="pggrid", protocol="grid", selection="validation",
                        max_epochs=1)  # fmt: skip
    workers = _workers(study, postgres_url, 3)
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    trained = [int(out.split("trained ")[1].split()[0]) for out, _ in outputs]
    assert sum(trained) == 8  # no configuration trained by two workers
    _assert_exactly_once(postgres_url, "pggrid", 8)
    # the final `hpstudy run` on the shared storage trains nothing and writes the tables; the
    # server trusts every login, so a password in the URL is accepted and must not be written
    secret_url = postgres_url.replace("postgres@", "postgres:s3cret@")
    cmd = hpstudy_cmd("run", str(study), "--storage", secret_url, *QUICK,
                      "--out", str(tmp_path / "run"))  # fmt: skip
    run = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "trained 0 trials now" in run.stdout
    assert (tmp_path / "run" / "tables" / "1_grid.csv").read_text().count("\n") == 1 + 8
    assert json.loads((tmp_path / "run" / "run.json").read_text())["storage"] == postgres_url
    for name in ("run.json", "report.md", "report.html", "report.json"):
        assert "s3cret" not in (tmp_path / "run" / name).read_text(), name


def test_a_killed_worker_is_replaced_by_the_others(postgres_url, tmp_path):
    study = write_study(tmp_path, name="pgkill", protocol="grid", selection="validation",
                        max_epochs=3)  # fmt: skip
    extra = ("--grace", "5", "--limit-train", "15000")
    # The victim starts alone, so a RUNNING trial is surely its own: it is killed while it
    # holds its second trial, after finishing one. Only then do the others start. It is
    # stopped (SIGSTOP) before the store is read again, so on a loaded machine it cannot finish
    # that trial between the read and the kill.
    (victim,) = _workers(study, postgres_url, 1, *extra)
    deadline = time.monotonic() + 600  # a safety net only: a loaded machine may be slow
    while time.monotonic() < deadline and victim.poll() is None:
        if _holds_a_trial_after_one(postgres_url):
            victim.send_signal(signal.SIGSTOP)
            if _holds_a_trial_after_one(postgres_url):
                victim.send_signal(signal.SIGKILL)
                break
            victim.send_signal(signal.SIGCONT)
        time.sleep(0.2)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the victim was never caught holding a trial"
    others = _workers(study, postgres_url, 2, *extra)
    for worker in others:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    records = _assert_exactly_once(postgres_url, "pgkill", 8)
    # the victim's trial went stale (no heartbeat for 5 s) and another worker trained it
    interrupted = [r for r in records if r.status is TrialStatus.INTERRUPTED]
    assert len(interrupted) >= 1
    assert {r.key for r in interrupted} <= {r.key for r in records if r.status.is_finished}


def _holds_a_trial_after_one(url: str) -> bool:
    records = load_trials(url, "pgkill") if _exists(url, "pgkill") else []
    running = sum(r.status is TrialStatus.RUNNING for r in records)
    return running == 1 and any(r.status is TrialStatus.FINISHED for r in records)


def _exists(url: str, name: str) -> bool:
    return Store(url, name).exists()
