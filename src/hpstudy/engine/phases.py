"""Where a `train()` call spends its time, phase by phase, told through a callback.

    >>> totals = {}
    >>> def on_phase(name, seconds): totals[name] = totals.get(name, 0.0) + seconds
    >>> train(configs, train_split, eval_split, on_phase=on_phase)
    >>> totals   # {"planning": 0.2, "training": 41.0, "evaluation": 3.1, "results": 0.4, ...}

The engine prints and writes nothing; a caller that wants a phase line (the runner writes one in
run.json) adds up what it is told. Phases (`ENGINE_PHASES`):

- planning: moving the splits to the device, grouping into populations, building each
  population, its optimizer state and step runner;
- capture: recording CUDA graphs (warm-up steps count as training);
- training: the training steps of an epoch;
- evaluation: evaluating every member, the epoch's host sync and the best-epoch snapshots;
- results: time spent in the caller's `on_results` (for the runner: storage);
- other: the `on_epoch` callback, dropping stopped members, copying their weights to the host.

On CUDA the clock synchronises with the device at each mark, so that kernels count where they
ran, not where the host next waited; that is two syncs an epoch, taken only when a caller asks
for phases (results do not change).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

ENGINE_PHASES = ("planning", "capture", "training", "evaluation", "results", "other")

PhaseCallback = Callable[[str, float], None]


class PhaseClock:
    """Reports the seconds since its last mark under a phase name; a no-op without a callback."""

    def __init__(self, on_phase: PhaseCallback | None, device: torch.device):
        self.on_phase, self.device = on_phase, torch.device(device)
        self.last = time.perf_counter()

    def mark(self, phase: str, *, capture_s: float = 0.0) -> None:
        """The time since the last mark was `phase`, less `capture_s` of it spent capturing."""
        if self.on_phase is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if capture_s:
            self.on_phase("capture", capture_s)
        self.on_phase(phase, max(0.0, now - self.last - capture_s))
        self.last = now
