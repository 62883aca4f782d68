"""`hpstudy bench`: every variant timed in one run, with the keys and ratios the issue names."""

from __future__ import annotations

import json

import pytest

from hpstudy.cli import main


def test_bench_json_has_every_variant_and_consistent_ratios(capsys):
    assert main(["bench", "--steps", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    times = report["per_model_epoch_s"]
    assert set(times) == {"paper_loop", "engine_1", "engine_15", "engine_75"}
    assert all(t > 0 for t in times.values()) and report["floor_s"] > 0
    assert report["device"] == "cpu"
    assert report["speedup_15"] == pytest.approx(times["paper_loop"] / times["engine_15"])
    assert report["floor_ratio_15"] == pytest.approx(times["engine_15"] / report["floor_s"])


def test_bench_table_and_bad_steps(capsys):
    assert main(["bench", "--steps", "1", "--members", "2"]) == 0
    out = capsys.readouterr().out
    assert "paper_loop" in out and "engine_2" in out and "floor" in out
    assert main(["bench", "--steps", "0"]) == 2
    assert "--steps must be >= 1, got --steps 0" in capsys.readouterr().err
