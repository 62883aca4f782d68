"""The plain PyTorch model a configuration describes: an `nn.Sequential` MLP or CNN.

    >>> torch.manual_seed(42); net = build_mlp(Config(topology="T1"))
    >>> [k for k in net.state_dict()]
    ['0.weight', '0.bias', '2.weight', '2.bias']

This is the reference the population engine must match: same initial weights for the same seed,
same state_dict keys for saved models.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hpstudy.config.choices import LEAKY_RELU_SLOPE
from hpstudy.config.config import Config
from hpstudy.engine.splits import Split


def activation_module(name: str) -> nn.Module:
    """The `nn` module for a canonical activation name (`hpstudy.config.choices.ACTIVATIONS`)."""
    modules = {
        "relu": nn.ReLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "leaky_relu": lambda: nn.LeakyReLU(LEAKY_RELU_SLOPE),
        "elu": nn.ELU,
    }
    return modules[name]()


def build_mlp(config: Config) -> nn.Sequential:
    """Linear, activation, [Dropout,] Linear, ..., Linear: the paper's MLP for `config` (uses
    torch's RNG); Dropout only when config.dropout > 0, so the paper's models keep their keys."""
    return nn.Sequential(*_dense_layers(config, config.layer_sizes))


def mlp_parameter_names(config: Config) -> list[str]:
    """The state_dict keys of build_mlp(config), in order: ['0.weight', '0.bias', '2.weight',
    ...] (the Linear modules sit every 3 places instead of 2 when there is dropout)."""
    stride = 3 if config.dropout else 2
    return [f"{stride * layer}.{kind}" for layer in range(len(config.layer_sizes) - 1)
            for kind in ("weight", "bias")]  # fmt: skip


def build_cnn(config: Config) -> nn.Sequential:
    """The CNN for `config` (uses torch's RNG): inputs (N, side * side) as the MLP's, unflattened
    to (N, 1, side, side); per block `convs_per_block` times Conv2d ("same" padding; no bias
    before a BatchNorm2d, which would cancel it), [BatchNorm2d,] activation, then MaxPool2d(2);
    then Flatten and the dense layers of `topology` with the activation (and Dropout, when
    config.dropout > 0) between them."""
    side, k = config.image_side, config.kernel_size
    layers: list[nn.Module] = [nn.Unflatten(1, (1, side, side))]
    for conv in config.conv_layers:
        layers.append(nn.Conv2d(conv.c_in, conv.c_out, k, padding=k // 2,
                                bias=not config.batch_norm))  # fmt: skip
        if config.batch_norm:
            layers.append(nn.BatchNorm2d(conv.c_out))
        layers.append(activation_module(config.activation))
        if conv.pool:
            layers.append(nn.MaxPool2d(2))
    layers.append(nn.Flatten())
    layers += _dense_layers(config, config.dense_sizes)
    return nn.Sequential(*layers)


def _dense_layers(config: Config, sizes: tuple[int, ...]) -> list[nn.Module]:
    """Linear, activation, [Dropout,] ... Linear over `sizes`: an MLP, or a CNN's dense head."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation_module(config.activation))
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
    return layers


def build_model(config: Config) -> nn.Sequential:
    """The plain model `config` describes: build_cnn for a CNN (config.conv), else build_mlp."""
    return build_cnn(config) if config.is_cnn else build_mlp(config)


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean cross-entropy
    accuracy: float  # in [0, 1]
    predictions: np.ndarray  # (N,) predicted class indices


def evaluate(
    config: Config, state_dict: dict[str, torch.Tensor], split: Split, *, device="cpu"
) -> Evaluation:
    """Evaluate one saved configuration on `split` (e.g. the test set, once)."""
    net = build_model(config)
    net.load_state_dict(state_dict)
    return evaluate_net(net, split, device=device)


@torch.no_grad()
def evaluate_net(net: nn.Sequential, split: Split, *, device="cpu") -> Evaluation:
    """Loss, accuracy and predictions of the plain model `net` on `split`, in chunks."""
    net.to(device=device, dtype=split.x.dtype).eval()
    split = split.to(device, split.x.dtype)
    logits = torch.cat([net(x) for x in split.x.split(8192)])
    loss = torch.nn.functional.cross_entropy(logits, split.y).item()
    predictions = logits.argmax(dim=1)
    accuracy = (predictions == split.y).double().mean().item()
    return Evaluation(loss=loss, accuracy=accuracy, predictions=predictions.cpu().numpy())
