"""Learning rates per epoch, exactly as `torch.optim.lr_scheduler` steps them.

    >>> epoch_lr(Config(lr=0.1, schedule="cosine", max_epochs=20), epoch=1)    # 0.1
    >>> epoch_lr(Config(lr=0.1, schedule="cosine", max_epochs=20), epoch=11)   # 0.05 (about)

A scheduler is stepped once per epoch, after the epoch's steps, so epoch e (1-based) trains at
the rate the scheduler holds after e - 1 steps. The rates come from torch's own scheduler run on
a one-parameter optimizer, so the engine and the reference loop use the same floats bit for bit
(CosineAnnealingLR's recursive form and its closed form differ in the last bits).
"""

from __future__ import annotations

import functools

import torch

from hpstudy.config.choices import STEP_GAMMA, step_size
from hpstudy.config.config import Config


def make_scheduler(config: Config, optimizer: torch.optim.Optimizer):
    """torch's scheduler for `config.schedule` on `optimizer` (None for a constant rate)."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.max_epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=step_size(config.max_epochs), gamma=STEP_GAMMA
        )
    return None


def epoch_lr(config: Config, epoch: int) -> float:
    """The learning rate of epoch `epoch` (1-based) for `config`."""
    return _rates(config.lr, config.schedule, config.max_epochs)[epoch - 1]


@functools.cache
def _rates(lr: float, schedule: str, max_epochs: int) -> tuple[float, ...]:
    if schedule == "constant":
        return (lr,) * max_epochs
    config = Config(lr=lr, schedule=schedule, max_epochs=max_epochs)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(config, optimizer)
    rates = []
    for _ in range(max_epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # before scheduler.step(), as torch asks
        scheduler.step()
    return tuple(rates)
