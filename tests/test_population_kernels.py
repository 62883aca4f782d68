"""Fewer small kernels, the same arithmetic: a population that mixes activations writes each run
of members into one buffer (out=) instead of concatenating per-run results, and every member's
bits stay those of the concatenating code it replaced."""

from __future__ import annotations

import pytest
import torch

from hpstudy import Config
from hpstudy.engine import make_split
from hpstudy.engine.optimizers import StackedOptimizer
from hpstudy.engine.population import ACTIVATION_KERNELS, Population, member_order_key
from hpstudy.engine.steps import StepRunner

N_TRAIN = 640  # 10 batches of 64

_BASE = Config(topology=(64, 32), seed=3, max_epochs=2)
# Every activation, every optimizer, a dropout member and two seeds: one mixed population.
CONFIGS = sorted(
    [
        _BASE.replace(activation="relu", optimizer="sgd", lr=0.05, momentum=0.9),
        _BASE.replace(activation="relu", optimizer="adam", lr=0.002, seed=4),
        _BASE.replace(activation="sigmoid", optimizer="sgd", lr=0.1),
        _BASE.replace(activation="tanh", optimizer="rmsprop", lr=0.001, dropout=0.2),
        _BASE.replace(activation="leaky_relu", optimizer="adam", lr=0.001),
        _BASE.replace(activation="elu", optimizer="rmsprop", lr=0.0005, seed=4),
        _BASE.replace(activation="elu", optimizer="sgd", lr=0.05, nesterov=True, momentum=0.5),
    ],
    key=member_order_key,
)


def _concatenating_activate(self, z):
    """The code this replaced (engine/population.py before the out= buffers)."""
    if len(self.activation_runs) == 1:
        return ACTIVATION_KERNELS[self.activation_runs[0][0]][0](z)
    return torch.cat([ACTIVATION_KERNELS[name][0](z[s]) for name, s in self.activation_runs])


def _concatenating_backward(self, grad, z, a):
    if len(self.activation_runs) == 1:
        return ACTIVATION_KERNELS[self.activation_runs[0][0]][1](grad, z, a)
    return torch.cat(
        [ACTIVATION_KERNELS[n][1](grad[s], z[s], a[s]) for n, s in self.activation_runs]
    )


def _trained(fashion, dtype, step="grouped"):
    train = make_split(fashion.train_images[:N_TRAIN], fashion.train_labels[:N_TRAIN],
                       mean=0.5, std=0.5, dtype=dtype)  # fmt: skip
    pop = Population.from_configs(CONFIGS, device="cpu", dtype=dtype)
    runner = StepRunner(pop, StackedOptimizer(pop, step=step), train)
    losses = [runner.epoch(epoch) for epoch in (1, 2)]
    return [p.clone() for p in pop.params], losses


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_activation_buffers_train_the_same_bits_as_concatenation(fashion, monkeypatch, dtype):
    params, losses = _trained(fashion, dtype)
    monkeypatch.setattr(Population, "_activate", _concatenating_activate)
    monkeypatch.setattr(Population, "_activation_backward", _concatenating_backward)
    old_params, old_losses = _trained(fashion, dtype)
    for new, old in zip(losses, old_losses, strict=True):
        assert torch.equal(new, old)
    for new, old in zip(params, old_params, strict=True):
        assert torch.equal(new, old), (new - old).abs().max().item()
    assert not torch.equal(params[0][0], params[0][1])  # members trained apart


def test_each_activation_writes_only_its_own_slice():
    """A run's out= kernel fills exactly its members' slice with what the plain kernel gives,
    NaN and signed zeros included."""
    z = torch.tensor([[-1.5, -0.0, 0.0, 2.0, float("nan"), -30.0]], dtype=torch.float32)
    pop = Population.from_configs(CONFIGS, device="cpu", dtype=torch.float32)
    zs = z.expand(pop.n_members, 4, 6).contiguous()  # (M, B, width)
    out = pop._activate(zs)
    grad = torch.linspace(-1, 1, zs.numel()).view(zs.shape)
    back = pop._activation_backward(grad, zs, out)
    for name, s in pop.activation_runs:
        forward, backward = ACTIVATION_KERNELS[name]
        expected = forward(zs[s])
        assert torch.equal(out[s].nan_to_num(7.0), expected.nan_to_num(7.0)), name
        assert torch.equal(torch.signbit(out[s]), torch.signbit(expected)), name
        expected_back = backward(grad[s], zs[s], expected)
        assert torch.equal(back[s].nan_to_num(7.0), expected_back.nan_to_num(7.0)), name
