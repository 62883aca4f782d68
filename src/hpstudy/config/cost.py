"""What a configuration costs: its parameters and the FLOPs of a training epoch (arithmetic only).

    >>> n_parameters(Config(topology="T4")), model_epoch_flops(Config(topology="T4"), 60_000)

A model-epoch costs about 6 x parameters x examples FLOPs (2 forward, 4 backward per weight and
example). A convolution's weights are used at every position of the image, so for a CNN each
block counts 2 x H x W x C_out x C_in x k x k FLOPs forward per example, and backward twice that.
`hpstudy.engine.flops` turns FLOPs into a floor in seconds on a device.
"""

from __future__ import annotations

import itertools

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
