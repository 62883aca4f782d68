"""The engine tells where its time goes (engine.phases) through a callback, and graphed steps
of the fused optimizer step train as eager ones do (CUDA graphs on the CPU stand-in)."""

from __future__ import annotations

import time

import pytest
import torch

from cuda_cases import ON_CUDA, use_stand_in_graphs
from hpstudy import Config
from hpstudy.engine import train
from hpstudy.engine.phases import ENGINE_PHASES
from slices import fashion_splits

N_TRAIN, N_EVAL = 640, 300

CONFIGS = [
    Config(topology=(64,), optimizer="adam", lr=0.002, seed=1, max_epochs=2, patience=2),
    Config(topology=(64,), optimizer="sgd", lr=0.05, momentum=0.9, seed=2, max_epochs=1),
    Config(topology=(64,), optimizer="rmsprop", lr=0.001, activation="tanh", seed=3,
           max_epochs=2, schedule="cosine", dropout=0.1),
]  # fmt: skip


@pytest.fixture(scope="module")
def splits(fashion):
    return fashion_splits(fashion, N_TRAIN, N_EVAL)


def test_phases_are_reported_and_cover_the_call(splits):
    told: list[tuple[str, float]] = []
    results = []

    def on_results(population):
        results.extend(i for i, _ in population)

    t0 = time.perf_counter()
    train(CONFIGS, *splits, on_results=on_results, on_phase=lambda n, s: told.append((n, s)))
    wall = time.perf_counter() - t0
    totals: dict[str, float] = {}
    for name, seconds in told:
        assert seconds >= 0, (name, seconds)
        totals[name] = totals.get(name, 0.0) + seconds
    assert set(totals) <= set(ENGINE_PHASES)
    for name in ("planning", "training", "evaluation", "other"):
        assert totals.get(name, 0.0) > 0, name
    assert "results" in totals  # on_results ran (too short to promise a nonzero time)
    assert totals.get("capture", 0.0) == 0  # no graphs on the CPU
    assert sum(totals.values()) <= wall
    assert sorted(results) == [0, 1, 2]


def test_without_a_callback_nothing_is_timed_and_results_are_the_same(splits):
    quiet = train(CONFIGS[:1], *splits)
    told = []
    timed = train(CONFIGS[:1], *splits, on_phase=lambda n, s: told.append(n))
    assert told and quiet[0].train_loss == timed[0].train_loss


@pytest.mark.parametrize("step", ["grouped", "fused"])
def test_graphed_steps_train_as_eager_ones_with_capture_timed(monkeypatch, splits, step):
    """On the stand-in, a graph re-runs its captured step: what the fused step reads at replay
    (step count, scheduled rates, scratch) must be where the capture left it."""
    eager = train(CONFIGS, *splits, optimizer_step=step)
    use_stand_in_graphs(monkeypatch)
    told = []
    graphed = train(CONFIGS, *splits, optimizer_step=step, cuda_graphs=True,
                    on_phase=lambda n, s: told.append(n))  # fmt: skip
    assert "capture" in told
    for a, b in zip(eager, graphed, strict=True):
        assert a.train_loss == b.train_loss and a.eval_loss == b.eval_loss
        for key, tensor in a.state_dict.items():
            assert torch.equal(tensor, b.state_dict[key]), key


@pytest.mark.parametrize("device", ON_CUDA)
def test_the_fused_step_on_cuda_graphed_and_alone(splits, device):
    """On a GPU: graphed fused steps train bit for bit as eager ones, and a member's bits are the
    same alone and beside the others (not measured where this was written: no GPU)."""
    eager = train(CONFIGS, *splits, device=device, optimizer_step="fused")
    graphed = train(CONFIGS, *splits, device=device, optimizer_step="fused", cuda_graphs=True)
    (alone,) = train(CONFIGS[:1], *splits, device=device, optimizer_step="fused")
    for a, b in [*zip(eager, graphed, strict=True), (alone, eager[0])]:
        assert a.train_loss == b.train_loss and a.eval_loss == b.eval_loss
        for key, tensor in a.state_dict.items():
            assert torch.equal(tensor, b.state_dict[key]), key
