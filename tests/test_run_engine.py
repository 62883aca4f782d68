"""What a run records about the engine that trained it: each trial's engine version (a resumed
run never mixes float32 trials of two engines silently) and run.json's per-phase timing line."""

from __future__ import annotations

import json

import pytest

from hpstudy import cli
from hpstudy.runner.execute import refuse_mixed_engines
from hpstudy.storage import TrialRecord, TrialStatus
from hpstudy.storage.rundir import load_trials
from tiny_studies import QUICK, write_study

RUN = ["--no-report", "--threads", "1", *QUICK]


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """A grid of 8 configurations, one epoch each, trained once with the default engine."""
    folder = tmp_path_factory.mktemp("engine")
    study = write_study(folder, protocol="grid", max_epochs=1)
    run_dir = folder / "run"
    assert cli.main(["run", str(study), "--out", str(run_dir), *RUN]) == 0
    return study, run_dir


def test_every_trial_records_its_engine(grid_run):
    _, run_dir = grid_run
    records = [r for r in load_trials(run_dir) if r.status.is_finished]
    assert len(records) == 8
    assert {r.versions.get("engine") for r in records} == {"1-grouped"}


def test_resuming_with_another_engine_is_refused_in_one_line(grid_run, capsys):
    study, run_dir = grid_run
    before = (run_dir / "run.json").read_text()
    code = cli.main(["run", str(study), "--out", str(run_dir), "--optimizer-step", "fused", *RUN])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert "holds 8 float32 trials trained by engine 1-grouped, this run's is 1-fused" in err
    assert "--optimizer-step grouped" in err
    assert (run_dir / "run.json").read_text() == before  # refused before anything was written


def test_the_same_engine_resumes_and_other_dtypes_or_versions_pass():
    def record(engine: str | None, dtype: str = "float32") -> TrialRecord:
        versions = {} if engine is None else {"engine": engine}
        return TrialRecord(number=0, trial_id=0, key="k", config=None, protocol="grid", split={},
                           status=TrialStatus.FINISHED, dtype=dtype,
                           versions=versions)  # fmt: skip

    refuse_mixed_engines([record("1-grouped"), record(None)], "grouped", "runs/x")
    refuse_mixed_engines([record("1-grouped", dtype="float64")], "fused", "runs/x")
    with pytest.raises(Exception, match="trained by engine 1-fused, this run's is 1-grouped"):
        refuse_mixed_engines([record("1-fused"), record("1-fused")], "grouped", "runs/x")
    with pytest.raises(Exception, match="holds 1 float32 trials trained by engine 1-grouped"):
        refuse_mixed_engines([record(None, dtype="float32+tf32")], "fused", "runs/x")


def test_run_json_keeps_a_phase_line_that_status_shows(grid_run, capsys):
    _, run_dir = grid_run
    phases = json.loads((run_dir / "run.json").read_text())["phases_s"]
    names = ["data", "probe", "planning", "capture", "training", "evaluation", "storage", "report",
             "other"]  # fmt: skip
    assert list(phases) == names
    assert all(phases[n] >= 0 for n in names)
    assert phases["training"] > 0 and phases["evaluation"] > 0 and phases["storage"] > 0
    assert phases["capture"] == 0  # no CUDA graphs on the CPU
    assert cli.main(["status", str(run_dir)]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("phases")]
    assert "training" in line and "storage" in line


def test_a_grid_on_cuda_takes_every_seed_in_one_engine_call():
    """On a CUDA device the engine runs populations together, so a grid's seeds go to one call;
    the CPU keeps the file's batch (a seed per call), and --batch always wins."""
    from hpstudy.config.studyfile import load_study
    from hpstudy.protocols import Trainer
    from hpstudy.runner.execute import engine_call_size
    from hpstudy.runner.options import RunOptions

    grid, paper = load_study("grid"), load_study("paper")
    assert grid.batch == 375
    assert engine_call_size(grid, RunOptions(device="cuda")) == Trainer.batch > 5 * 375
    assert engine_call_size(grid, RunOptions(device="cuda:1")) == Trainer.batch
    assert engine_call_size(grid, RunOptions()) == 375
    assert engine_call_size(grid, RunOptions(device="cuda", batch=100)) == 100
    assert engine_call_size(paper, RunOptions(device="cuda")) == paper.batch
