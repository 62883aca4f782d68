"""What tests of the CUDA paths share: the devices a test runs on (CUDA where present) and CUDA
graphs on the CPU, a stand-in whose replay() re-runs the captured step, so that the step
runner's side of graphs (warm-up, capture, static buffers, recapture) is tested without a GPU."""

from __future__ import annotations

import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]
ON_CUDA = DEVICES[1:]  # the CUDA case alone


class StandInGraph:
    """A CPU stand-in for torch.cuda.CUDAGraph: replay() re-runs the captured step."""

    def __init__(self, step, generators=()):  # a real graph registers the generators
        self.step = step

    def replay(self):
        self.step()


def use_stand_in_graphs(monkeypatch) -> None:
    """Let the engine 'graph' its steps on the CPU with `StandInGraph`."""
    from hpstudy.engine import steps, training

    for module in (steps, training):
        monkeypatch.setattr(module, "graphs_supported", lambda device: True)
    monkeypatch.setattr(steps, "graphs_replay_generators", lambda: True)
    monkeypatch.setattr(steps, "capture_graph", StandInGraph)
    monkeypatch.setattr(steps, "on_side_stream", lambda step: step())
