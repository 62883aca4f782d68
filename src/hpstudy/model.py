"""The plain PyTorch model a configuration describes: `nn.Sequential` of `nn.Linear` layers.

    >>> torch.manual_seed(42); net = build_mlp(Config(topology="T1"))
    >>> [k for k in net.state_dict()]
    ['0.weight', '0.bias', '2.weight', '2.bias']

This is the reference the population engine must match: same initial weights for the same seed,
same state_dict keys for saved models.
"""

from __future__ import annotations

import itertools

from torch import nn

from hpstudy.space import LEAKY_RELU_SLOPE, Config


def activation_module(name: str) -> nn.Module:
    """The `nn` module for a canonical activation name (see `hpstudy.space.ACTIVATIONS`)."""
    modules = {
        "relu": nn.ReLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "leaky_relu": lambda: nn.LeakyReLU(LEAKY_RELU_SLOPE),
        "elu": nn.ELU,
    }
    return modules[name]()


def build_mlp(config: Config) -> nn.Sequential:
    """Linear, activation, Linear, ..., Linear: the paper's MLP for `config` (uses torch's RNG)."""
    sizes = config.layer_sizes
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation_module(config.activation))
    return nn.Sequential(*layers)
