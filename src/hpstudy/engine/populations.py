"""One interface for every population family, and the one place that picks a family.

    >>> pop = population_for(configs, device="cpu", dtype=torch.float32)   # MLPs or CNNs
    >>> snapshot = [t.clone() for t in pop.state_tensors()]
    >>> pop.state_dict_from(snapshot, 0)      # member 0 as `build_model(config).state_dict()`

The trainer, the step runner and the benchmark speak only `StackedPopulation`; a new family is a
class with these members and one line in `population_class`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from hpstudy.config.config import Config
from hpstudy.engine.cnn import CNNPopulation
from hpstudy.engine.population import Population


class StackedPopulation(Protocol):
    """Configurations of one shape trained as one: what every family provides."""

    configs: list[Config]  # one per member, in member order (`member_order_key`)

    @property
    def n_members(self) -> int: ...

    def start_epoch(self, epoch: int) -> None: ...

    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def select(self, keep: torch.Tensor) -> None: ...

    def state_tensors(self) -> list[torch.Tensor]: ...

    def state_dict_from(self, tensors: Sequence[torch.Tensor], i: int) -> dict: ...


def population_class(config: Config) -> type:
    """The family that trains `config`: a CNN population for convolutional configs."""
    return CNNPopulation if config.is_cnn else Population


def population_for(
    configs: Sequence[Config], *, device: torch.device | str, dtype: torch.dtype
) -> StackedPopulation:
    """A population of `configs` (one shape: see `planning.plan_populations`)."""
    return population_class(configs[0]).from_configs(list(configs), device=device, dtype=dtype)
