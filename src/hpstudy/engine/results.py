"""What the engine returns for each configuration it trains."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hpstudy.config.config import Config

if TYPE_CHECKING:  # annotations only: reading a stored outcome must not load torch
    import numpy as np
    import torch


class Outcome(enum.Enum):
    """How a trial ended."""

    COMPLETE = "complete"  # trained until max_epochs or early stopping
    DIVERGED = "diverged"  # training loss became NaN or inf; stopped, the others unaffected
    PRUNED = "pruned"  # stopped early by a search protocol's pruner

    @property
    def is_usable(self) -> bool:
        """Whether the trial's best accuracy is a fair number to rank and tabulate."""
        return self in (Outcome.COMPLETE, Outcome.PRUNED)


@dataclass
class TrialResult:
    """One configuration's training record. Epochs are 1-based in `best_epoch`."""

    config: Config
    outcome: Outcome
    train_loss: list[float]  # mean training loss of each epoch run
    eval_loss: list[float]  # evaluation-split loss after each epoch
    eval_accuracy: list[float]  # evaluation-split accuracy in [0, 1] after each epoch
    best_epoch: int  # epoch with the highest eval accuracy (first such), 0 if none finished
    wall_s: float  # this member's share of its population's training wall time
    device: str  # e.g. "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"
    dtype: str  # "float32", "float64" or "float32+tf32" (opt-in TF32 matmuls)
    # Best-epoch weights as `build_mlp(config).state_dict()` (CPU tensors); None if none finished.
    state_dict: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    # (N,) bool: which evaluation images the best epoch classified correctly (None if no epoch
    # finished). Two trials on the same split can then be compared image by image (McNemar).
    eval_correct: np.ndarray | None = field(default=None, repr=False)
    # The engine that trained it (optimizers.engine_version, e.g. "1-grouped"): two engines
    # agree to rounding, not bit for bit in float32. "" where unknown.
    engine: str = ""

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)

    @property
    def best_accuracy(self) -> float:
        return self.eval_accuracy[self.best_epoch - 1] if self.best_epoch else float("nan")
