"""`hpstudy run`, `status` and `dashboard` as a user runs them, including `kill -9` mid-run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch

from hpstudy import cli
from hpstudy.config.cost import model_epoch_flops
from hpstudy.stats.tables import read_tables
from hpstudy.storage import TrialStatus
from hpstudy.storage.rundir import load_trials
from tiny_studies import QUICK, hpstudy_cmd, subprocess_env, write_study

pytestmark = pytest.mark.slow  # its module fixture runs a study; kill -9 and rerun

STATUS_KEYS = {"study", "protocol", "counts", "best", "trials", "model_epochs", "wall_s",
               "floor_s", "phases_s"}  # fmt: skip
TRIAL_KEYS = {"number", "config", "seed", "outcome", "status", "best_accuracy", "best_epoch",
              "epochs"}  # fmt: skip


def _states(db: Path, *, mode: str = "ro") -> dict[str, int]:
    """Trial counts by state. While a writer lives, read-only; after it is killed, `mode="rw"`
    lets SQLite roll back a transaction the kill left half-written (a read-only connection
    cannot, and may then report a state that never committed)."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode={mode}", uri=True, timeout=1) as con:
            return dict(con.execute("SELECT state, count(*) FROM trials GROUP BY state"))
    except sqlite3.Error:  # tables not created yet, or locked for a moment
        return {}


def _comparable(run_dir: Path) -> list[dict]:
    """The tables without trial numbers (an interrupted run uses up some numbers)."""
    tables = [t.to_dict() for t in read_tables(run_dir)]
    for table in tables:
        for row in table["rows"]:
            row.pop("trial_numbers")
    return tables


# Enough images and epochs that a population trains for about half a second: with QUICK's 320
# images and 3 epochs, the moments when some trials are stored and others still train lasted
# about one poll each, and a quiet CI machine once ran through all of them unseen.
VICTIM = ["--limit-train", "2400", "--limit-eval", "250"]


def _mid_training(states: dict[str, int]) -> bool:
    return states.get("COMPLETE", 0) >= 1 and states.get("RUNNING", 0) >= 1


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One uninterrupted run, and one killed with SIGKILL mid-training and then rerun."""
    tmp = tmp_path_factory.mktemp("cli")
    study = write_study(tmp, n_seeds=2, max_epochs=6)
    env = subprocess_env()
    whole, killed = tmp / "whole", tmp / "killed"
    args = ["run", str(study), *VICTIM]
    uninterrupted = subprocess.Popen(hpstudy_cmd(*args, "--out", str(whole)), env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    victim = subprocess.Popen(hpstudy_cmd(*args, "--out", str(killed)), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline, at_kill = time.monotonic() + 600, {}  # a safety net only
    while time.monotonic() < deadline and victim.poll() is None:
        if _mid_training(_states(killed / "study.db")):
            victim.send_signal(signal.SIGSTOP)  # frozen: the state read now is the one killed
            at_kill = _states(killed / "study.db")
            if _mid_training(at_kill):
                os.kill(victim.pid, signal.SIGKILL)
                break
            victim.send_signal(signal.SIGCONT)  # it moved on between the two reads
        time.sleep(0.05)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, f"never caught mid-training: {at_kill}"
    at_kill = _states(killed / "study.db", mode="rw")  # what the kill left behind
    assert at_kill.get("RUNNING", 0) >= 1, at_kill
    out, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err.decode()
    rerun = subprocess.run(hpstudy_cmd(*args, "--out", str(killed)), env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    return {"whole": whole, "killed": killed, "stdout": out.decode(), "stderr": err.decode(),
            "rerun_stdout": rerun.stdout, "at_kill": at_kill}  # fmt: skip


def test_kill_9_then_rerun_completes_exactly_once(runs):
    records = load_trials(runs["killed"])
    finished = [r for r in records if r.status is TrialStatus.FINISHED]
    assert len({r.key for r in finished}) == len(finished) == (2 + 1 + 1) * 2
    # the trials the kill left RUNNING were taken as dead and trained again
    interrupted = [r for r in records if r.status is TrialStatus.INTERRUPTED]
    assert len(interrupted) == runs["at_kill"]["RUNNING"], (
        runs["at_kill"],
        [(r.number, r.key, r.status.value) for r in records],
    )
    assert {r.key for r in interrupted} <= {r.key for r in finished}
    assert not [r for r in records if r.status in (TrialStatus.RUNNING, TrialStatus.WAITING)]


def test_resumed_run_gives_the_same_tables(runs):
    assert _comparable(runs["killed"]) == _comparable(runs["whole"])
    a = torch.load(runs["whole"] / "final_best_model.pth", weights_only=True)
    b = torch.load(runs["killed"] / "final_best_model.pth", weights_only=True)
    assert a["metadata"]["config"] == b["metadata"]["config"]
    assert a["metadata"]["metrics"] == b["metadata"]["metrics"]


def test_run_prints_tables_progress_and_costs(runs):
    out, err = runs["stdout"], runs["stderr"]
    assert "Table" not in err and "topology" in out and "* " in out  # winner marked
    assert "stage 1/3 topology: 4 trials, 0 already in the store" in err
    assert "stage 2/3 optimizer: 4 trials, 2 already in the store" in err
    assert "population" in err and "epoch" in err and "ETA" in err
    assert "model-epochs" in out and "wall time" in out and "FLOP floor" in out
    for name in ("1_topology", "2_optimizer", "3_lr"):
        assert (runs["whole"] / "tables" / f"{name}.csv").is_file()
        assert (runs["whole"] / "tables" / f"{name}.json").is_file()
    assert "trained 0 trials now" in subprocess.run(
        hpstudy_cmd("run", str(next(runs["whole"].parent.glob("*.toml"))), *VICTIM,
                    "--out", str(runs["whole"])),
        capture_output=True, text=True, env=subprocess_env(), timeout=300,
    ).stdout  # fmt: skip


def test_status_json(runs, capsys):
    assert cli.main(["status", str(runs["whole"]), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert set(status) == STATUS_KEYS
    assert status["counts"]["complete"] == len(status["trials"]) == 8
    assert all(set(t) == TRIAL_KEYS for t in status["trials"])
    assert status["model_epochs"] == sum(t["epochs"] for t in status["trials"]) > 0
    assert status["wall_s"] > 0 and status["floor_s"] > 0
    # The floor divides the trials' FLOPs by the throughput measured when the run started.
    info = json.loads((runs["whole"] / "run.json").read_text())
    flops = sum(
        model_epoch_flops(r.config, r.n_train) * r.epochs
        for r in load_trials(runs["whole"])
        if r.status is TrialStatus.FINISHED
    )
    assert status["floor_s"] == pytest.approx(flops / info["matmul_flops"])
    winner = read_tables(runs["whole"])[-1].winner
    assert status["best"]["config"] == winner.config.to_dict()
    assert cli.main(["status", str(runs["whole"])]) == 0
    out = capsys.readouterr().out
    assert "8 complete" in out
    best = winner.config
    assert f"best: {best.text(seed=False)}: " in out and "seed=" not in out


def test_status_of_a_non_run_folder_exits_2(tmp_path, capsys):
    assert cli.main(["status", str(tmp_path)]) == 2
    assert "not an hpstudy run folder" in capsys.readouterr().err


def test_dashboard_without_the_extra_says_how_to_install(runs, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "optuna_dashboard" else real(name, *a),
    )
    assert cli.main(["dashboard", str(runs["whole"])]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'hpstudy[dashboard]'" in err


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, capsys):
    from hpstudy.storage.rundir import exclusive

    with exclusive(tmp_path):
        code = cli.main(["run", "paper", "--out", str(tmp_path), *QUICK])
    assert code == 2 and "another `hpstudy run` is using" in capsys.readouterr().err


def test_run_info_keeps_no_storage_password(tmp_path):
    from hpstudy.config.studyfile import load_study
    from hpstudy.runner.options import RunOptions
    from hpstudy.storage.rundir import run_info

    study = load_study(str(write_study(tmp_path)))
    url = "postgresql://u:s3cret@host/db"
    argv = ["hpstudy", "run", "tiny", "--storage", url, f"--storage={url}"]
    info = run_info(study, RunOptions(storage=url), {}, argv=argv, matmul_flops=1e9)
    assert "s3cret" not in json.dumps(info)
    assert info["storage"] == info["options"]["storage"] == "postgresql://u@host/db"
    assert info["command"][-2:] == ["postgresql://u@host/db", "--storage=postgresql://u@host/db"]


def test_run_with_a_password_free_storage_url_keeps_it_as_given(tmp_path, capsys):
    study = write_study(tmp_path, max_epochs=1)
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    run_dir = tmp_path / "run"
    cmd = hpstudy_cmd("run", str(study), *QUICK, "--out", str(run_dir), f"--storage={url}",
                      "--no-report", "--threads", "1")  # fmt: skip
    run = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert not (run_dir / "study.db").exists()  # the trials went to the given storage
    info = json.loads((run_dir / "run.json").read_text())
    assert info["machine"]["threads"] == 1 and info["options"]["threads"] == 1
    assert info["storage"] == info["options"]["storage"] == url
    assert f"--storage={url}" in info["command"]
    assert cli.main(["status", str(run_dir), "--json"]) == 0  # reads run.json's URL
    assert json.loads(capsys.readouterr().out)["counts"]["complete"] == 4


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--dtype", "tf32"], "--dtype tf32 needs a CUDA device, got --device cpu"),
        (["--cuda-graphs"], "--cuda-graphs needs a CUDA device, got --device cpu"),
    ],
)
def test_cuda_only_options_are_refused_on_the_cpu(tmp_path, capsys, flags, message):
    code = cli.main(["run", "paper", "--device", "cpu", "--out", str(tmp_path / "r"), *flags])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "flags,device,graphs",
    [([], "cpu", False), ([], "cuda", True), (["--no-cuda-graphs"], "cuda:1", False),
     (["--no-cuda-graphs"], "cpu", False), (["--cuda-graphs"], "cuda", True)],
)  # fmt: skip
def test_cuda_graphs_are_on_by_default_for_cuda_devices_only(monkeypatch, flags, device, graphs):
    """Graphed steps train bit for bit as eager ones (the CUDA tests), so a CUDA run replays
    them unless told --no-cuda-graphs; the CPU has none. (The device is taken as resolved.)"""
    import argparse

    from hpstudy.commands import study_args

    parser = argparse.ArgumentParser()
    parser.add_argument("study")
    study_args.add_study_options(parser)
    monkeypatch.setattr(study_args, "_device_for", lambda args: device)
    _, options = study_args.options_from(parser.parse_args(["paper", *flags]))
    assert options.device == device and options.cuda_graphs is graphs


@pytest.mark.parametrize(
    "flags,together",
    [([], None), (["--concurrent-populations"], True), (["--no-concurrent-populations"], False)],
)
def test_concurrent_populations_reach_the_engine(monkeypatch, flags, together):
    """The flag travels from the command line to `engine.train`'s keyword (None: the engine's
    default, together on CUDA only)."""
    import argparse

    from hpstudy.commands import study_args
    from hpstudy.config.studyfile import load_study
    from hpstudy.data.prepare import prepare_data

    parser = argparse.ArgumentParser()
    parser.add_argument("study")
    study_args.add_study_options(parser)
    _, options = study_args.options_from(parser.parse_args(["digits", "--device", "cpu", *flags]))
    assert options.concurrent_populations is together
    data = prepare_data(load_study("digits"), options)
    assert data.engine_options()["concurrent_populations"] is together


@pytest.mark.parametrize(
    "study,budget,message",
    [
        ("paper", "60", "--time-budget is for search studies; paper has protocol = 'staged'"),
        ("search", "0", "--time-budget must be a positive number of seconds, got 0.0"),
        ("search", "nan", "--time-budget must be a positive number of seconds, got nan"),
    ],
)
def test_bad_time_budgets_are_refused_before_anything_is_written(
    tmp_path, capsys, study, budget, message
):
    code = cli.main(["run", study, "--time-budget", budget, "--out", str(tmp_path / "r")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_zero_threads_are_refused_before_anything_is_written(tmp_path, capsys):
    code = cli.main(["run", "paper", "--threads", "0", "--out", str(tmp_path / "r")])
    assert code == 2 and "--threads must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_busy_machine_suggests_one_thread_unless_threads_are_chosen(monkeypatch):
    import os

    import torch

    from hpstudy.commands.study_args import busy_machine_hint
    from hpstudy.runner.options import RunOptions

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.0, 2.0))
    assert "load 3.5 on 2 cores" in busy_machine_hint(RunOptions())
    assert "--threads 1" in busy_machine_hint(RunOptions())
    assert busy_machine_hint(RunOptions(threads=2)) is None  # the user chose
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.3, 0.2))
    assert busy_machine_hint(RunOptions()) is None  # a quiet machine


def test_a_run_and_its_report_load_the_data_once(tmp_path, monkeypatch):
    """`hpstudy run` hands the report the data it trained on: one load and hash, not two; and
    the report reads the final model as a later `hpstudy report` does, which loads it anew."""
    from hpstudy.data import datasets
    from hpstudy.report import build_report

    loads = []
    load_dataset = datasets.load_dataset

    def counted(*args, **kwargs):
        loads.append(args)
        return load_dataset(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", counted)
    run_dir = tmp_path / "run"
    study = write_study(tmp_path, max_epochs=1)
    assert cli.main(["run", str(study), "--out", str(run_dir), *QUICK, "--threads", "1"]) == 0
    assert len(loads) == 1
    written = json.loads((run_dir / "report.json").read_text())["tables"]
    build_report(run_dir, command=None)
    assert len(loads) == 2  # a report on its own rebuilds the data from run.json
    again = json.loads((run_dir / "report.json").read_text())["tables"]
    assert written.keys() == again.keys() and "per-class" in written  # the final model
    # Every table the same, the command line under "reproduce" aside (this one came from Python).
    different = [key for key in written if written[key] != again[key]]
    assert different == ["reproduce"], different
