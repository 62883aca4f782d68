"""Training-image augmentation that a stacked run and a plain loop can share: random horizontal
flips and shifts, drawn from (seed, epoch) alone.

    >>> draws = epoch_draws(config, epoch=1, n=54_000)       # one draw per position in the order
    >>> x = augment(train.x[idx], draws.slice(0, 128), side=28)   # the batch at positions 0..127

Each position of an epoch's batch order gets one draw: flip or not, and a shift (dy, dx) of at
most `MAX_SHIFT` pixels, with the border's pixels repeated into the gap (torchvision's
`RandomCrop(28, padding=2, padding_mode="edge")`, then `RandomHorizontalFlip()`). A draw belongs
to a position, not to an image, so a batch's draws are a slice, exactly as its images are. The
draws come from a generator seeded by (seed, epoch) apart from the batch order's and dropout's
streams, so a member sees the same images whatever population it is trained in, and the
reference loop sees them too. Evaluation images are never augmented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hpstudy.config.choices import MAX_SHIFT
from hpstudy.config.config import Config
from hpstudy.engine.splits import to_device

_STREAM = 2  # SeedSequence([seed, epoch, 2]): apart from batch_order's and dropout's streams


@dataclass(frozen=True)
class Draws:
    """Per position in an epoch's order: flip (..., n) bool, dy and dx (..., n) int64.
    A leading member axis (M, n) when members draw differently."""

    flip: torch.Tensor
    dy: torch.Tensor
    dx: torch.Tensor

    def slice(self, start: int, stop: int) -> Draws:
        return Draws(*(t[..., start:stop] for t in (self.flip, self.dy, self.dx)))

    def clone(self) -> Draws:
        return Draws(self.flip.clone(), self.dy.clone(), self.dx.clone())

    def copy_(self, other: Draws) -> None:
        """Overwrite these tensors with `other`'s (a CUDA graph's static draws)."""
        for mine, theirs in zip((self.flip, self.dy, self.dx), (other.flip, other.dy, other.dx),
                                strict=True):  # fmt: skip
            mine.copy_(theirs)


def epoch_draws(config: Config, epoch: int, n: int, device="cpu") -> Draws:
    """The draws of `config`'s training epoch `epoch` (1-based) over `n` positions; all
    identity (no flip, no shift) where its augmentation does not flip or shift."""
    state = np.random.SeedSequence([config.seed, epoch, _STREAM]).generate_state(1, np.uint64)
    generator = torch.Generator().manual_seed(int(state[0]))
    # Always drawn in this order, whatever is used: a flip-only member and a shift-only member
    # with one seed see the same coin for the same position.
    flip = torch.rand(n, generator=generator) < 0.5
    shift = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2, n), generator=generator)
    if "flip" not in config.augment:
        flip = torch.zeros_like(flip)
    if "shift" not in config.augment:
        shift = torch.zeros_like(shift)
    return Draws(to_device(flip, device), to_device(shift[0], device), to_device(shift[1], device))


def population_draws(configs: Sequence[Config], epoch: int, n: int, device) -> Draws | None:
    """The draws of a population's epoch: None when no member augments, (n,) when every member
    draws alike (one seed, one augmentation), else (M, n), row m member m's."""
    if all(c.augment == "none" for c in configs):
        return None
    keys = [(c.seed, c.augment) for c in configs]
    by_key: dict[tuple, Draws] = {}
    for key, config in zip(keys, configs, strict=True):
        if key not in by_key:  # once per (seed, augmentation), not once per member
            by_key[key] = epoch_draws(config, epoch, n, device)
    if len(by_key) == 1:
        return next(iter(by_key.values()))
    rows = [by_key[key] for key in keys]
    return Draws(*(torch.stack([getattr(d, f) for d in rows]) for f in ("flip", "dy", "dx")))


def augment(x: torch.Tensor, draws: Draws, side: int) -> torch.Tensor:
    """The images of `x` (B, side * side) or (M, B, side * side), each shifted then flipped by
    its draw; (M, B, D) when the draws have a member axis."""
    rows = torch.arange(side, device=x.device)
    # Output pixel (r, c) reads input pixel (clamp(r + dy), clamp(c' + dx)), where c' is c, or
    # side - 1 - c when flipped; clamping to the border is the edge padding.
    r = (rows + draws.dy.unsqueeze(-1)).clamp_(0, side - 1)  # (..., B, side)
    cols = torch.where(draws.flip.unsqueeze(-1), rows.flip(0), rows)
    c = (cols + draws.dx.unsqueeze(-1)).clamp_(0, side - 1)
    index = (r.unsqueeze(-1) * side + c.unsqueeze(-2)).flatten(-2)  # (..., B, side * side)
    if index.dim() > x.dim():  # per-member draws over a shared batch
        x = x.expand(index.shape[0], *x.shape)
    return x.gather(-1, index)
