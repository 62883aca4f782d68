"""The device scripts, run here on the CPU at their smallest sizes: a session lent a GPU has a few
minutes for `bash benchmarks/gpu.sh throughput`, so every step of it must have run before."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tiny_studies import QUICK, hpstudy_cmd, subprocess_env, write_study

pytestmark = pytest.mark.slow  # subprocesses that load torch and the data, and a tiny run

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SMALL = ["--device", "cpu", "--threads", "1"]


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / name), *args], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _throughput(*args: str) -> subprocess.CompletedProcess:
    return _script("throughput.py", *args, *SMALL)


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_steps_prints_ms_per_step_and_the_fit_per_topology():
    out = _throughput("steps", "--topologies", "T1,T2", "--members", "1,3", "--steps", "2",
                      "--rounds", "1", "--limit-train", "320")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"steps: cpu, torch {torch.__version__}, float32")
    assert re.search(r"M=1\s+M=3\s+a ms\s+b ms/M", out.stdout), out.stdout
    for topology in ("T1", "T2"):  # two points and the line through them
        assert re.search(rf"^  {topology}(\s+-?\d+\.\d+){{4}}$", out.stdout, re.M), out.stdout


def test_profile_splits_cpu_op_time_by_class():
    out = _throughput("profile", "--topologies", "T2", "--members", "3", "--steps", "2",
                      "--limit-train", "320")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "the CPU time of each op stands in for kernel time" in out.stdout
    shares = {m[1]: float(m[2]) for m in re.finditer(
        r"^    (gemm/matmul|optimizer|activation|other)\s+\S+ ms/step\s+(\S+)%$", out.stdout,
        re.M)}  # fmt: skip
    assert set(shares) == {"gemm/matmul", "optimizer", "activation", "other"}, out.stdout
    assert sum(shares.values()) == pytest.approx(100, abs=0.3)
    assert all(share > 0 for share in shares.values()), shares
    assert re.search(r"eager +wall .* wall - CPU ops", out.stdout), out.stdout


def test_bits_are_equal_at_every_population_size_on_the_cpu():
    out = _throughput("bits", "--topologies", "T1", "--sizes", "1,5,12", "--limit-train", "3200")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "T1[784-128-10] adam lr=0.001 relu seed=42" in out.stdout
    for size in (1, 5, 12):
        assert re.search(rf"^ +{size}  equal +0   {size} of {size} equal$", out.stdout, re.M), (
            out.stdout
        )
    assert out.stdout.rstrip().endswith("bits: all equal")


def test_bits_exits_1_when_a_member_depends_on_its_neighbours(monkeypatch, capsys):
    """A constructed neighbour-dependent step (each update nudged by the population's size)."""
    throughput = _module("throughput")
    base = throughput.StackedOptimizer

    class Nudged(base):
        def step(self):
            super().step()
            pop = self.population  # the member's arithmetic now depends on M
            for p in pop.params:
                p.add_(1e-6 * (pop.n_members - 1))

    monkeypatch.setattr(throughput, "StackedOptimizer", Nudged)
    code = throughput.main(["bits", "--topologies", "T1", "--sizes", "1,3", "--steps", "2",
                            "--limit-train", "640", *SMALL])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1, out
    assert re.search(r"^ +3  NOT EQUAL", out, re.M), out
    assert "bits: DIFFER: T1 at 1, T1 at 3" in out  # the member alone differs from its row at 3


def test_concurrent_compares_the_two_calls_bit_for_bit():
    """Sequential and concurrent populations (the engine's keyword), every result compared."""
    out = _throughput("concurrent", "--members", "1", "--max-epochs", "1", "--limit-train",
                      "320", "--limit-eval", "250")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "concurrent_populations=False" in out.stdout
    assert "concurrent_populations=True" in out.stdout
    assert "results equal (state, losses, accuracies, best epoch, outcome): 5 of 5" in out.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["bits", "--dtype", "tf32"],
        ["steps", "--cuda-graphs"],
        ["steps", "--topologies", "T9"],
        ["bits", "--sizes", "5,75"],
        ["steps", "--members", "1,x"],
        ["steps", "--members", "80"],
        ["steps", "--steps", "20", "--limit-train", "320"],
    ],
    ids=[
        "tf32-on-cpu",
        "graphs-on-cpu",
        "topology",
        "sizes-without-1",
        "members",
        "too-many",
        "too-few-images",
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(args):
    out = _throughput(*args)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()[-1]) > 10, out.stderr


def test_run_summary_reads_a_grid_run(tmp_path):
    study = write_study(tmp_path, name="tinygrid", protocol="grid", selection="validation")
    run_dir = tmp_path / "run"
    command = hpstudy_cmd("run", str(study), *QUICK, "--out", str(run_dir), "--threads", "1",
                          "--quiet", "--no-report")  # fmt: skip
    run = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = _script("run_summary.py", str(run_dir))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"run {run_dir}: study tinygrid, cpu, dtype float32")
    assert re.search(
        r"phases_s: data \S+, probe \S+, planning \S+, capture \S+, training", out.stdout
    )
    assert "trials: 8 complete" in out.stdout, out.stdout
    # tiny_studies' space: T1 and T2, each with 2 optimizers x 2 learning rates: two populations
    for topology in ("T1", "T2"):
        m = re.search(rf"^ +{topology} bs 64 seed 42: +4 trials, +(\d+) epochs, +(\d+) "
                      r"model-epochs, +\S+ s; live ([\d ]+)$", out.stdout, re.M)  # fmt: skip
        assert m, out.stdout
        live = [int(n) for n in m[3].split()]
        assert len(live) == int(m[1]) and sum(live) == int(m[2]) and live[0] == 4, m[0]
    assert _module("run_summary").live_per_epoch([1, 3, 3, 2]) == [4, 3, 2]
    missing = _script("run_summary.py", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "not an hpstudy run folder" in missing.stderr


def test_gpu_script_parses_and_names_every_phase():
    script = BENCHMARKS / "gpu.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text(encoding="utf-8")
    phases = re.findall(r"^  (\w+)\)", text, re.M)
    usage = re.search(r"usage: bash benchmarks/gpu.sh ([\w|]+)\}", text)[1].split("|")
    assert phases == usage, (phases, usage)
    for phase in phases:
        assert f"bash benchmarks/gpu.sh {phase} " in text, f"{phase} missing from the header"
