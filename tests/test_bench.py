"""`hpstudy bench`: every variant timed in one run, with the keys and ratios the issue names."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hpstudy.cli import main
from hpstudy.data import fashion_mnist
from hpstudy.engine import make_split
from hpstudy.runner import bench

_TORCHVISION, _TORCHVISION_SKIPPED = bench.import_torchvision()
needs_torchvision = pytest.mark.skipif(
    _TORCHVISION is None, reason=f"torchvision variant unavailable: {_TORCHVISION_SKIPPED}"
)


@pytest.mark.slow
def test_bench_json_has_every_variant_with_medians_inside_their_spreads(capsys):
    assert main(["bench", "--steps", "2", "--repeats", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    times, spreads = report["per_model_epoch_s"], report["per_model_epoch_spread_s"]
    expected = {"paper_loop", "engine_1", "engine_15", "engine_75"}
    if _TORCHVISION is not None:
        expected.add("paper_loop_torchvision")
    assert set(times) == set(spreads) == expected
    assert report["device"] == "cpu" and report["repeats"] == 3 and report["floor_s"] > 0
    for name, (low, high) in spreads.items():
        assert 0 < low <= times[name] <= high, name
    for name in ("speedup_15", "floor_ratio_15"):
        low, high = report[f"{name}_spread"]
        assert 0 < low <= report[name] <= high, name


class _ScriptedTimer:
    """A timer that returns the next of `values` and logs its turn in `log`."""

    def __init__(self, name, values, log):
        self.name, self.values, self.log = name, iter(values), log

    def __call__(self):
        self.log.append(self.name)
        return next(self.values)


def test_variants_take_turns():
    log = []
    timers = {name: _ScriptedTimer(name, [1.0, 2.0, 3.0], log) for name in ("A", "B")}
    samples = bench.interleave(timers, repeats=3)
    assert log == ["A", "B", "A", "B", "A", "B"]
    assert samples == {"A": [1.0, 2.0, 3.0], "B": [1.0, 2.0, 3.0]}


def test_ratios_are_taken_round_by_round_then_summarised(monkeypatch, fashion):
    """Round r compares the variants timed in round r: with these times the ratio of medians
    would be 6 / 2 = 3, but the median of per-round ratios is 2 (rounds: 2, 10, 1.5)."""
    log = []
    paper = _ScriptedTimer("paper_loop", [4.0, 10.0, 6.0], log)
    engine = _ScriptedTimer("engine_15", [30.0, 15.0, 60.0], log)  # 15 members: 2, 1, 4

    def prepare(*args):
        timers = {"paper_loop": paper, "engine_15": engine}
        return timers, {"paper_loop": 1, "engine_15": 15}, {}

    monkeypatch.setattr(bench, "_prepare", prepare)
    monkeypatch.setattr(bench, "import_torchvision", lambda: (None, "not needed here"))
    train = make_split(fashion.train_images[:64], fashion.train_labels[:64], mean=0.5, std=0.5)
    report = bench.run_benchmark(train, repeats=3)
    assert report["per_model_epoch_s"] == {"paper_loop": 6.0, "engine_15": 2.0}
    assert report["per_model_epoch_spread_s"]["engine_15"] == [1.0, 4.0]
    assert report["speedup_15"] == 2.0 and report["speedup_15_spread"] == [1.5, 10.0]
    floor = report["floor_s"]
    assert report["floor_ratio_15"] == pytest.approx(2.0 / floor)
    assert report["floor_ratio_15_spread"] == pytest.approx([1.0 / floor, 4.0 / floor])
    assert log == ["paper_loop", "engine_15"] * 3


@pytest.mark.slow
def test_bench_table_and_bad_steps(capsys):
    assert main(["bench", "--steps", "1", "--members", "2"]) == 0
    out = capsys.readouterr().out
    assert "paper_loop" in out and "engine_2" in out and "floor" in out
    assert "spread" in out and "speedup_15" not in out  # no 15-member population
    assert main(["bench", "--steps", "0"]) == 2
    assert "--steps must be >= 1, got --steps 0" in capsys.readouterr().err
    assert main(["bench", "--repeats", "0"]) == 2
    assert "--repeats must be >= 1, got --repeats 0" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_without_torchvision_says_why(monkeypatch, capsys):
    monkeypatch.setattr(bench, "import_torchvision", lambda: (None, "no torchvision here"))
    assert main(["bench", "--steps", "1", "--members", "15", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "paper_loop_torchvision" not in report["per_model_epoch_s"]
    assert report["torchvision"] is None
    assert report["torchvision_skipped"] == "no torchvision here"
    assert "speedup_15_torchvision" not in report and "speedup_15" in report
    assert main(["bench", "--steps", "1", "--members", "15"]) == 0
    assert "paper_loop_torchvision skipped: no torchvision here" in capsys.readouterr().out


def test_staged_root_holds_the_verified_decompressed_files(tmp_path):
    raw = bench.stage_torchvision_root(tmp_path) / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(fashion_mnist.FILES.values())
    for name in fashion_mnist.FILES.values():  # uncompressed, as torchvision opens them
        fashion_mnist.verify_digest(name, (raw / name).read_bytes(), raw / name)


@needs_torchvision
def test_bench_times_the_torchvision_loop(capsys):
    assert main(["bench", "--steps", "2", "--members", "15", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    times = report["per_model_epoch_s"]
    seconds = times["paper_loop_torchvision"]
    assert math.isfinite(seconds) and seconds > 0
    assert report["torchvision"] == _TORCHVISION.__version__
    assert report["torchvision_skipped"] is None
    low, high = report["speedup_15_torchvision_spread"]
    assert 0 < low <= report["speedup_15_torchvision"] <= high
    assert main(["bench", "--steps", "1", "--members", "15"]) == 0
    assert "paper_loop_torchvision" in capsys.readouterr().out


@needs_torchvision
def test_torchvision_dataset_reads_our_files(tmp_path, fashion):
    dataset = bench.torchvision_fashion_mnist(bench.stage_torchvision_root(tmp_path))
    assert len(dataset) == fashion_mnist.N_TRAIN
    ours = make_split(
        fashion.train_images[:1],
        fashion.train_labels[:1],
        mean=fashion_mnist.PIXEL_MEAN,
        std=fashion_mnist.PIXEL_STD,
    )
    image, label = dataset[0]
    assert image.shape == (1, fashion_mnist.N_ROWS, fashion_mnist.N_COLS)
    assert (image.flatten() - ours.x[0]).abs().max().item() < 1e-6
    assert label == int(fashion.train_labels[0])


def test_cpu_bench_has_no_graph_rows_and_refuses_tf32(capsys):
    assert main(["bench", "--steps", "1", "--members", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "float32" and report["graph_capture_s"] == {}
    assert not any(name.endswith("_graphs") for name in report["per_model_epoch_s"])
    assert main(["bench", "--tf32", "--device", "cpu"]) == 2
    assert "--tf32 needs a CUDA device, got --device cpu" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bench_times_graphs_beside_eager_steps(capsys):
    assert main(["bench", "--device", "cuda", "--steps", "20", "--members", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    times = report["per_model_epoch_s"]
    assert times["engine_3"] > 0 and times["engine_3_graphs"] > 0
    assert report["graph_capture_s"]["engine_3_graphs"] > 0
