"""Dropout masks that a stacked run and a plain loop can share: one generator per (seed, epoch).

    >>> gen = dropout_generator(seed=42, epoch=1, device="cpu")
    >>> mask = dropout_mask(gen, (64, 256), p=0.2, dtype=torch.float32)   # 0 or 1/(1 - p)
    >>> net = with_seeded_dropout(build_mlp(config))   # the reference loop's form

`nn.Dropout` draws from torch's global RNG, which a population of many members cannot share with
a plain loop. Here each member draws its masks from its own generator, seeded by (seed, epoch)
and drawn step by step, hidden layer by hidden layer. The reference loop replaces each
`nn.Dropout` with `SeededDropout`, which draws the same masks from the same generator: the one
place where the reference is not bare `nn`. A saved model keeps plain `nn.Dropout` modules (they
do nothing at inference).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from hpstudy.config.config import Config

_STREAM = 1  # SeedSequence([seed, epoch, 1]): apart from batch_order's [seed, epoch]


def dropout_generator(seed: int, epoch: int, device: torch.device | str) -> torch.Generator:
    """The generator of a member's dropout masks in epoch `epoch` (1-based)."""
    return torch.Generator(device=device).manual_seed(_epoch_seed(seed, epoch))


def epoch_generators(
    generators: Sequence[torch.Generator | None], configs: Sequence[Config], epoch: int, device
) -> list[torch.Generator | None]:
    """Each dropout member's generator for epoch `epoch` (None for members without dropout).
    A generator it already has is reseeded in place, not replaced: a CUDA graph that registered
    it draws from it at each replay, so the graph's masks follow the new epoch's seed."""
    fresh = []
    for generator, config in zip(generators, configs, strict=True):
        if not config.dropout:
            fresh.append(None)
        elif generator is None:
            fresh.append(dropout_generator(config.seed, epoch, device))
        else:
            fresh.append(generator.manual_seed(_epoch_seed(config.seed, epoch)))
    return fresh


def _epoch_seed(seed: int, epoch: int) -> int:
    state = np.random.SeedSequence([seed, epoch, _STREAM]).generate_state(1, dtype=np.uint64)
    return int(state[0])


def dropout_mask(generator: torch.Generator, shape, p: float, *, dtype, device=None):
    """A (shape) mask of 0 (probability p) and 1 / (1 - p), as nn.Dropout scales."""
    device = device or generator.device
    keep = torch.rand(shape, generator=generator, dtype=dtype, device=device) >= p
    return keep.to(dtype).div_(1 - p)


class SeededDropout(nn.Module):
    """`nn.Dropout(p)` with its masks from `generator` (see the module docstring)."""

    def __init__(self, p: float, generator_ref: list):
        super().__init__()
        self.p, self._generator = p, generator_ref  # a one-item list, reseeded per epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * dropout_mask(self._generator[0], x.shape, self.p, dtype=x.dtype,
                                device=x.device)  # fmt: skip


def with_seeded_dropout(net: nn.Sequential) -> tuple[nn.Sequential, list]:
    """`net` with each nn.Dropout replaced by SeededDropout sharing one generator slot;
    returns (net, slot): put `dropout_generator(seed, epoch, device)` in slot[0] each epoch."""
    slot: list = [None]
    for name, module in net.named_children():
        if isinstance(module, nn.Dropout):
            setattr(net, name, SeededDropout(module.p, slot))
    return net, slot
