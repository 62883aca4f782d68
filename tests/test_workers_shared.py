"""Every protocol shared by `hpstudy worker` processes: on a journal file and on PostgreSQL.

Four workers share a tiny search (budget 12, confirmation 2 x 3) and a tiny staged study, one of
them killed by -9 mid-way; two share a grid, and two a replication whose verdict the final
`hpstudy run` writes. Each ends with every trial finished exactly once.
The data is scikit-learn's digits (1,150 training images), so a study takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from hpstudy.storage import Store, TrialStatus
from hpstudy.storage.rundir import load_trials
from test_workers_postgres import postgres_server
from tiny_studies import REPLICATE, hpstudy_cmd, subprocess_env

pytestmark = [pytest.mark.slow]

DATA = """
schema_version = 1
name = "{name}"
protocol = "{protocol}"
selection = "test"
seed = 42
n_seeds = {n_seeds}
batch_size = 16
max_epochs = {max_epochs}
patience = 20
[data]
name = "digits"
test_size = 0.2
split_seed = 0
normalization = "auto"
"""

SEARCH = """
[space]
topology = ["T1", [32], [16]]
optimizer = ["sgd", "adam"]
lr = [0.01, 0.05, 0.1]
activation = ["relu", "tanh"]
[search]
n_trials = 12
batch = 25
pruner = "none"
sampler_seed = 0
confirm_top = 2
confirm_seeds = 3
"""

STAGED = """
[space]
topology = ["T1", [32], [16]]
optimizer = ["sgd", "adam"]
lr = [0.01, 0.05, 0.1]
activation = ["relu"]
[start]
optimizer = "sgd"
lr = 0.05
activation = "relu"
[[stages]]
factor = "topology"
[[stages]]
factor = "optimizer"
[[stages]]
factor = "lr"
"""

GRID = """
[space]
topology = ["T1", [32]]
optimizer = ["sgd", "adam"]
lr = [0.01, 0.1]
activation = ["relu"]
"""

REPLICATE_SPACE = """
[space]
topology = ["T1", "T2"]
optimizer = ["sgd", "adam"]
lr = [0.01, 0.05]
activation = ["relu"]
"""

# --grace: a killed worker's trials are taken over after 15 s; three missed heartbeats (every
# 5 s), so a live worker on a loaded machine is not taken for dead.
WORKER = ("--device", "cpu", "--threads", "1", "--grace", "15")


def write(folder: Path, name: str, protocol: str, body: str, *, n_seeds: int = 1,
          max_epochs: int = 8) -> Path:  # fmt: skip
    path = folder / f"{name}.toml"
    text = DATA.format(name=name, protocol=protocol, n_seeds=n_seeds, max_epochs=max_epochs)
    path.write_text(text + body, encoding="utf-8")
    return path


@pytest.fixture(params=["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request, tmp_path):
    if request.param == "journal":
        yield f"journal://{tmp_path / 'study.log'}"  # journal:///tmp/...
        return
    with postgres_server() as url:
        yield url


def start(study: Path, url: str, n: int, *extra: str) -> list[subprocess.Popen]:
    cmd = hpstudy_cmd("worker", str(study), "--storage", url, *WORKER, *extra)
    return [subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(n)]  # fmt: skip


def kill_one(workers: list[subprocess.Popen], url: str, name: str) -> list[subprocess.Popen]:
    """SIGKILL the first worker caught holding a trial (stopped first, so it cannot finish that
    trial between the look and the kill); the others, still running."""
    host = socket.gethostname()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        for worker in holders(url, name, {f"{host}:{w.pid}": w for w in workers}):
            worker.send_signal(signal.SIGSTOP)
            if worker in holders(url, name, {f"{host}:{worker.pid}": worker}):
                worker.send_signal(signal.SIGKILL)
                worker.communicate(timeout=60)
                assert worker.returncode == -signal.SIGKILL
                return [w for w in workers if w is not worker]
            worker.send_signal(signal.SIGCONT)
        time.sleep(0.1)
    raise AssertionError("no worker was caught holding a trial")


def holders(url: str, name: str, by_name: dict[str, subprocess.Popen]) -> list:
    """The workers among `by_name` ('host:pid' -> process) that hold a RUNNING trial."""
    with contextlib.suppress(Exception):  # the study may not exist yet
        running = {r.worker for r in load_trials(url, name) if r.status is TrialStatus.RUNNING}
        return [w for n, w in by_name.items() if n in running and w.poll() is None]
    return []


def finish(workers: list[subprocess.Popen]) -> list[int]:
    """Wait for the workers; each must succeed; the trials each says it trained."""
    trained = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-2000:]
        trained.append(int(out.split("trained ")[-1].split()[0]))
        # The claim size is printed by a worker that claimed; on a loaded machine a worker that
        # starts late may find nothing left to claim, which is no failure.
        assert "claiming " in out or trained[-1] == 0, out[-2000:]
        print(*[line for line in out.splitlines() if line.startswith("claiming")], sep="\n")
    return trained


def finished_once(url: str, name: str) -> list:
    records = load_trials(url, name)
    finished = [r for r in records if r.status.is_finished]
    twice = [k for k, n in Counter(r.key for r in finished).items() if n > 1]
    assert not twice, f"trained twice: {twice}"
    assert not [r for r in records if r.status in (TrialStatus.RUNNING, TrialStatus.WAITING)]
    return finished


def test_four_workers_share_a_search_one_killed(storage, tmp_path):
    study = write(tmp_path, "wsearch", "search", SEARCH)
    started = time.monotonic()
    trained = finish(kill_one(start(study, storage, 4), storage, "wsearch"))
    wall = time.monotonic() - started
    finished = finished_once(storage, "wsearch")
    search = [r for r in finished if r.seed == 42]
    confirming = [r for r in finished if r.seed != 42]
    assert len({r.config.replace(seed=0) for r in search}) == len(search) == 12
    assert len(confirming) == 6 and {r.seed for r in confirming} == {1042, 1043, 1044}
    assert len({r.config.replace(seed=0) for r in confirming}) == 2
    assert sum(trained) <= 18  # the victim trained the rest (and was killed holding some)
    print(f"\n{storage.split(':')[0]} search: 4 workers, trained {trained} + victim, "
          f"{len(finished)} finished, 0 twice, {wall:.0f} s")  # fmt: skip
    # `status` from the storage alone
    cmd = hpstudy_cmd("status", "wsearch", "--storage", storage)
    status = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "18 done, 0 running" in status.stdout and "0 left of 18" in status.stdout
    # the final `hpstudy run` on the shared storage trains nothing and writes the tables
    cmd = hpstudy_cmd("run", str(study), "--storage", storage, *WORKER, "--out",
                      str(tmp_path / "run"))  # fmt: skip
    run = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "trained 0 trials now" in run.stdout
    assert (tmp_path / "run" / "tables" / "2_confirmed.csv").read_text().count("\n") == 1 + 2


def test_four_workers_share_a_staged_study_one_killed(storage, tmp_path):
    study = write(tmp_path, "wstaged", "staged", STAGED, n_seeds=2, max_epochs=16)
    started = time.monotonic()
    trained = finish(kill_one(start(study, storage, 4), storage, "wstaged"))
    wall = time.monotonic() - started
    finished = finished_once(storage, "wstaged")
    # 3 topologies, 2 optimizers, 3 learning rates, two seeds each; each stage reuses the
    # previous winner's trials: (3 + 1 + 2) configurations x 2 seeds
    assert len(finished) == 12
    print(f"\n{storage.split(':')[0]} staged: 4 workers, trained {trained} + victim, "
          f"{len(finished)} finished, 0 twice, {wall:.0f} s")  # fmt: skip


def test_two_workers_share_a_grid_evenly(storage, tmp_path):
    # The first worker is held (SIGSTOP) after its first claim until the second has claimed
    # the rest: the shares then follow from the claim rule, not from how fast a loaded machine
    # starts the second process. A long --grace keeps the held worker alive meanwhile.
    study = write(tmp_path, "wgrid", "grid", GRID, n_seeds=2, max_epochs=60)
    started = time.monotonic()
    (first,) = start(study, storage, 1, "--grace", "600")
    held = False
    try:
        # Its whole first claim (half of 16: it counts at least two workers), which it then
        # trains for seconds: long enough for this poll to see it on a loaded machine too.
        wait_for(lambda: count(storage, "wgrid", TrialStatus.RUNNING) >= 8, first)
        first.send_signal(signal.SIGSTOP)
        held = True
        (second,) = start(study, storage, 1, "--grace", "600")
        wait_for(lambda: count(storage, "wgrid", TrialStatus.WAITING) == 0, second)
    finally:
        if held:
            first.send_signal(signal.SIGCONT)
    trained = finish([first, second])
    wall = time.monotonic() - started
    assert len(finished_once(storage, "wgrid")) == 16 == sum(trained)
    assert max(trained) <= 0.6 * 16, trained  # shared, not one worker taking the whole grid
    print(f"\n{storage.split(':')[0]} grid: 2 workers, trained {trained}, 0 twice, {wall:.0f} s")


def test_two_workers_share_a_replication_then_run_writes_its_verdict(storage, tmp_path):
    # The paper's path: T1 and T2 (SGD, 0.01), then SGD and Adam on T2, then 0.01 and 0.05 with
    # Adam: 4 distinct configurations x 2 seeds, and the staged search (seed 42) beside it.
    study = write(tmp_path, "wrep", "replicate", REPLICATE_SPACE + REPLICATE, n_seeds=2,
                  max_epochs=8)  # fmt: skip
    trained = finish(start(study, storage, 2))
    finished = finished_once(storage, "wrep")
    assert sum(trained) == len(finished) >= 8
    paper = {(r.config.topology, r.config.optimizer, r.config.lr, r.seed) for r in finished}
    t1, t2 = (128,), (256, 128)
    for factors in ((t1, "sgd", 0.01), (t2, "sgd", 0.01), (t2, "adam", 0.01), (t2, "adam", 0.05)):
        assert {(*factors, 42), (*factors, 43)} <= paper
    cmd = hpstudy_cmd("run", str(study), "--storage", storage, *WORKER, "--out",
                      str(tmp_path / "run"))  # fmt: skip
    run = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "trained 0 trials now" in run.stdout
    verdict = json.loads((tmp_path / "run" / "replication.json").read_text())
    assert len(verdict["cells"]) == 6 and all(c["mean"] is not None for c in verdict["cells"])
    assert verdict["final_model"]["seed"] == 42


def count(url: str, name: str, status: TrialStatus) -> int:
    """How many of the study's trials are in `status` now (0 before the study exists)."""
    with contextlib.suppress(Exception):  # the study may not exist yet
        return sum(r.status is status for r in load_trials(url, name))
    return 0


def wait_for(condition, worker: subprocess.Popen, limit_s: float = 600) -> None:
    """Poll until `condition()` holds; fail if `worker` exits first or the safety net runs out."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert worker.poll() is None, worker.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)


def test_a_worker_with_other_settings_is_refused_in_one_line(tmp_path):
    url = f"journal://{tmp_path / 'study.log'}"
    study = write(tmp_path, "wset", "grid", GRID, max_epochs=2)
    assert finish(start(study, url, 1)) == [8]
    (other,) = start(study, url, 1, "--max-epochs", "1")
    _, err = other.communicate(timeout=120)
    assert other.returncode != 0 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "max_epochs=2" in lines[0] and "max_epochs=1" in lines[0], err
    assert Store(url, "wset").exists()


def test_worker_help_tells_the_truth():
    run = subprocess.run(hpstudy_cmd("worker", "--help"), env=subprocess_env(),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0
    assert "--time-budget" not in run.stdout and "default: SQLite" not in run.stdout
    assert "journal:///" in run.stdout
    bare = subprocess.run(hpstudy_cmd("worker", "grid"), env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bare.returncode != 0 and "--storage" in bare.stderr


def test_cluster_examples_parse():
    root = Path(__file__).resolve().parent.parent / "examples"
    scripts = sorted(root.glob("**/*.sh"))
    manifests = sorted(root.glob("**/*.yaml"))
    assert scripts and manifests
    for script in scripts:
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, f"{script}: {check.stderr}"
        assert "hpstudy " in script.read_text()
    try:
        import yaml
    except ImportError:  # a minimal check: no tabs, and the keys a Job needs
        yaml = None
    for manifest in manifests:
        text = manifest.read_text()
        assert "\t" not in text and "hpstudy" in text
        if yaml is not None:
            docs = [d for d in yaml.safe_load_all(text) if d]
            assert any(d.get("kind") == "Job" for d in docs), manifest
        else:
            assert "kind: Job" in text
