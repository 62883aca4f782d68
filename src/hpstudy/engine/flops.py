"""The FLOP floor: how fast training could possibly go on this device.

    >>> floor = flop_floor_s(model_epoch_flops(Config(topology="T4"), 60_000), device="cpu")

`hpstudy.config.cost` counts a configuration's FLOPs (arithmetic, no torch); dividing them by
the matmul throughput measured here gives a lower bound on the time they take.
"""

from __future__ import annotations

import contextlib
import functools
import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock timing covers it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def training_numerics(tf32: bool):
    """The numeric settings training runs under, inside the block only (the global settings are
    restored after). TF32 for matmuls and for convolutions, both as asked: cuDNN's convolutions
    use TF32 by default (`cudnn.allow_tf32`), so a float32 CNN run would otherwise not be float32
    on CUDA. And cuDNN's deterministic algorithms: torch lets cuDNN pick ones that sum in a
    varying order, and a member's bits must depend on neither the run nor its neighbours (on an
    H200 two trainings of one CNN member came out with 19 of 22 tensors a few bits apart under
    torch's default, and bit for bit equal with this setting)."""
    switches = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (switches[0].allow_tf32, switches[1].allow_tf32, switches[1].deterministic)
    switches[0].allow_tf32 = switches[1].allow_tf32 = tf32
    switches[1].deterministic = True
    try:
        yield
    finally:
        switches[0].allow_tf32, switches[1].allow_tf32, switches[1].deterministic = before


def measure_matmul_flops(
    device: str = "cpu", dtype: torch.dtype = torch.float32, size: int = 2048, *, tf32=False
) -> float:
    """Sustained FLOP/s of a large square matmul on `device` (best of a few timed repeats);
    `tf32=True` measures TensorFloat-32 matmuls (CUDA float32)."""
    with training_numerics(tf32):
        return _measure_matmul_flops(str(device), dtype, size, tf32)


@functools.cache  # the precision is part of the key: tf32 is read inside
def _measure_matmul_flops(device: str, dtype: torch.dtype, size: int, tf32: bool) -> float:
    dev = torch.device(device)
    a = torch.randn(size, size, device=dev, dtype=dtype)
    b = torch.randn(size, size, device=dev, dtype=dtype)
    n_inner = 2 if dev.type == "cpu" else 50
    torch.matmul(a, b)  # warm-up: thread pools, kernels, clocks
    synchronize(dev)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n_inner):
            torch.matmul(a, b)
        synchronize(dev)
        best = min(best, (time.perf_counter() - start) / n_inner)
    return 2.0 * size**3 / best


def flop_floor_s(flops: float, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Seconds that `flops` of matmul take at the measured throughput of `device`."""
    return flops / measure_matmul_flops(device, dtype)
