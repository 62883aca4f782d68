"""Data as device tensors, and the batch order every member and the reference loop share.

    >>> train = make_split(ds.train_images, ds.train_labels, mean=0.5, std=0.5)
    >>> perm = batch_order(seed=42, epoch=1, n=len(train.y))   # a CPU int64 permutation

The whole split goes to the device once; a batch is a slice of a permutation (no DataLoader).
The permutation of epoch e is a function of (seed, e) alone, so any loop that takes its batches
from `batch_order` sees exactly what a population member sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """Inputs and labels of one split: x (N, D) normalised (D = 784 for FashionMNIST), y (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Split:
        return Split(self.x.to(device=device, dtype=dtype), self.y.to(device=device))


def make_split(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    mean: float,
    std: float,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Split:
    """uint8 images (N, H, W) -> x = (pixel / 255 - mean) / std, flattened to (N, H * W);
    float features (N, D) -> x = (value - mean) / std."""
    if np.asarray(images).dtype == np.uint8:
        x = torch.from_numpy(np.array(images, dtype=np.uint8)).reshape(len(images), -1)  # a copy
        # Same arithmetic as torchvision's ToTensor() then Normalize(mean, std).
        x = (x.to(dtype).div(255) - mean) / std
    else:
        x = torch.from_numpy(np.array(images, dtype=np.float32)).reshape(len(images), -1)
        x = (x.to(dtype) - mean) / std
    y = torch.from_numpy(np.array(labels, dtype=np.int64))  # a copy: the data is read-only
    return Split(x.to(device), y.to(device))


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Host-to-device copy that does not make the host wait (pinned memory on CUDA): what the
    engine copies each epoch (batch order, augmentation draws, learning rates) must not stall
    the steps already queued."""
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def batch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The permutation of range(n) that orders epoch `epoch` (1-based) for `seed`, on the CPU."""
    # SeedSequence mixes (seed, epoch) into an independent stream: epochs never share an order
    # and nearby seeds do not produce related permutations.
    stream_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])
    generator = torch.Generator().manual_seed(stream_seed)
    return torch.randperm(n, generator=generator)
