"""How many members fit in one population on a device.

    >>> max_members(config, device=torch.device("cuda"), dtype=torch.float32)
    6120

    >>> n_admitted(held, [population_bytes(c, 75, torch.float32) for c in waiting], budget)
    2

A population holds five copies of its parameters (weights, gradients, two optimizer moments and
the best-epoch snapshot) plus one step's activations. The budget is a fraction of the device's
free memory (CUDA) or of the machine's available memory (CPU); larger groups are split into
several populations. A CNN population runs its members one at a time, so one member's step
activations are counted once for the whole population. Populations that train together (on
CUDA, `train(concurrent_populations=...)`) share the same budget: `population_bytes` is what
one of them holds, with its own evaluation working set, and `n_admitted` says how many of those
waiting start beside the ones running.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from hpstudy.config.config import Config
from hpstudy.config.cost import n_parameters

_PARAMETER_COPIES = 5  # params, grads, exp_avg, exp_avg_sq, best-epoch snapshot
# The fused step's update and denominator buffers (`fused.Scratch`): each as large as the
# largest layer's rows, counted here as all parameters (an upper bound).
_FUSED_SCRATCH_COPIES = 2
_ACTIVATION_COPIES = 4  # pre-activation, activation, its gradient, a temporary
_BUDGET_FRACTION = 0.6  # of free memory: leaves room for evaluation chunks and the data
# Activations per evaluation chunk (128 MiB of float32); a chunk's pre-activations,
# activations and logits are the working set a population keeps while it evaluates.
EVAL_CHUNK_ELEMENTS = 2**25
_EVAL_CHUNK_COPIES = 3


def bytes_per_member(config: Config, dtype: torch.dtype, n_eval: int = 10_000, *,
                     optimizer_step: str = "grouped") -> int:  # fmt: skip
    """Parameters and their copies (two more for the fused step's scratch), one step's
    activations, and the per-image buffers of an evaluation (each image's loss, and the best
    epoch's correctness mask, one byte each)."""
    element = torch.empty((), dtype=dtype).element_size()
    copies = _PARAMETER_COPIES + (_FUSED_SCRATCH_COPIES if optimizer_step == "fused" else 0)
    per_image = n_eval * (element + 2)  # loss; this epoch's and the best epoch's masks
    if config.is_cnn:  # activations are one member's at a time (see shared_bytes)
        # running mean and var of every batch norm
        statistics = 2 * sum(c.c_out for c in config.conv_layers) if config.batch_norm else 0
        return element * (copies * n_parameters(config) + 2 * statistics) + per_image
    activations = config.batch_size * (
        config.n_inputs + _ACTIVATION_COPIES * sum(config.layer_sizes[1:])
    )
    return element * (copies * n_parameters(config) + activations) + per_image


def shared_bytes(config: Config, dtype: torch.dtype) -> int:
    """Memory a population needs once whatever its size: a CNN member's step activations
    (each block: conv output, batch norm output, activation, their gradients, the pooled
    output), or for an evaluation chunk of 1024 images if that is more; 0 for an MLP."""
    if not config.is_cnn:
        return 0
    element = torch.empty((), dtype=dtype).element_size()
    per_image = sum((_ACTIVATION_COPIES + 2) * c.c_out * c.side * c.side
                    for c in config.conv_layers)  # fmt: skip
    return element * max(config.batch_size, 1024) * (per_image + sum(config.dense_sizes))


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # not POSIX: assume a modest machine
        return 8 * 2**30


def max_members(
    config: Config, *, device: torch.device, dtype: torch.dtype, n_eval: int = 10_000,
    optimizer_step: str = "grouped",
) -> int:  # fmt: skip
    """The largest population of `config`'s shape that fits the memory budget (at least 1)."""
    budget = memory_budget(device) - shared_bytes(config, dtype)
    per_member = bytes_per_member(config, dtype, n_eval, optimizer_step=optimizer_step)
    return max(1, int(budget // per_member))


def population_bytes(
    config: Config, n_members: int, dtype: torch.dtype, n_eval: int = 10_000, *,
    optimizer_step: str = "grouped",
) -> int:  # fmt: skip
    """Memory a population of `n_members` of `config`'s shape holds while it trains beside
    others: its members, what it needs once, and its evaluation chunk's working set (each
    population evaluates on its own stream, so the chunks of several coexist)."""
    element = torch.empty((), dtype=dtype).element_size()
    evaluation = _EVAL_CHUNK_COPIES * EVAL_CHUNK_ELEMENTS * element
    return (
        n_members * bytes_per_member(config, dtype, n_eval, optimizer_step=optimizer_step)
        + shared_bytes(config, dtype)
        + evaluation
    )


def memory_budget(device: torch.device) -> float:
    """Bytes that training on `device` may plan for: what `max_members` fills with one
    population, and what populations running together share."""
    return _BUDGET_FRACTION * free_bytes(device)


def n_admitted(held: int, waiting: Sequence[int], budget: float) -> int:
    """How many of the `waiting` populations (their `population_bytes`, in order) start now
    beside running ones that hold `held` bytes: the longest prefix that fits `budget`, and at
    least one when nothing runs (a population alone always runs: `max_members` sized it)."""
    n = 0
    for need in waiting:
        if held + need > budget and (held or n):
            break
        held += need
        n += 1
    return n


def split_group(indices: list[int], limit: int) -> list[list[int]]:
    """`indices` in consecutive chunks of at most `limit`, as even as possible (sizes differ by
    at most one: 10 by 4 is 4 + 3 + 3, not 4 + 4 + 2)."""
    n_chunks = -(-len(indices) // limit)
    size, extra = divmod(len(indices), n_chunks)
    chunks, start = [], 0
    for i in range(n_chunks):
        end = start + size + (i < extra)
        chunks.append(indices[start:end])
        start = end
    return chunks
