"""The FLOP floor: how fast training could possibly go on this device.

    >>> floor = flop_floor_s(model_epoch_flops(Config(topology="T4"), 60_000), device="cpu")

A model-epoch costs about 6 x parameters x examples FLOPs (2 forward, 4 backward per weight and
example); dividing by the matmul throughput measured here gives a lower bound on its time. A
convolution's weights are used at every position of the image, so for a CNN each block counts
2 x H x W x C_out x C_in x k x k FLOPs forward per example, and backward twice that.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time

import torch

from hpstudy.config.config import Config


def n_parameters(config: Config) -> int:
    """Trainable parameters: dense weights and biases, and a CNN's convolutions and batch norms."""
    sizes = config.dense_sizes
    dense = sum(n_in * n_out + n_out for n_in, n_out in itertools.pairwise(sizes))
    k = config.kernel_size
    conv = sum(  # weights, then a bias or batch norm's (gamma, beta)
        c.c_out * c.c_in * k * k + (2 * c.c_out if config.batch_norm else c.c_out)
        for c in config.conv_layers
    )
    return dense + conv


def conv_forward_flops(config: Config) -> float:
    """Forward FLOPs of a CNN's convolutions for one example (0 for an MLP)."""
    k = config.kernel_size  # "same" padding: side x side outputs
    return sum(2.0 * c.side * c.side * c.c_out * c.c_in * k * k for c in config.conv_layers)


def model_epoch_flops(config: Config, n_train: int) -> float:
    """FLOPs of one training epoch of `config` over `n_train` examples (matmuls and
    convolutions only): dense layers 6 per weight, convolutions 3 x their forward FLOPs."""
    dense_weights = sum(a * b for a, b in itertools.pairwise(config.dense_sizes))
    dense_biases = sum(config.dense_sizes[1:])
    if not config.is_cnn:  # as before CNNs: 6 x parameters, biases included
        return 6.0 * (dense_weights + dense_biases) * n_train
    return (6.0 * dense_weights + 3.0 * conv_forward_flops(config)) * n_train


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
