"""A trial's result depends on its configuration and device alone (STYLE 14: neighbour-free
arithmetic): trained alone, at other positions among other members, with or without a shared
seed, beside a member that diverges, or twice in one call, it gives the very same bits."""

from __future__ import annotations

import pytest
import torch

from hpstudy import Config
from hpstudy.engine import make_split, population_run, train
from hpstudy.engine.optimizers import StackedOptimizer
from hpstudy.engine.population import Population

N_TRAIN, N_EVAL = 1200, 500  # 18 batches of 64 and a short one of 48

# One target per optimizer rule; T2 so two hidden layers and their backward run.
_BASE = Config(topology="T2", activation="tanh", seed=5, max_epochs=2, patience=5)
TARGETS = [
    _BASE.replace(optimizer="adam", lr=0.002),
    _BASE.replace(optimizer="rmsprop", activation="elu", lr=0.001),
    _BASE.replace(optimizer="sgd", activation="relu", lr=0.05),
]


def _same_rule(seeds):
    """Neighbours that share each target's rule, so the target sits at another position in
    its optimizer's range (members are sorted by seed within it)."""
    return [t.replace(seed=s) for t in TARGETS for s in seeds]


_WILD = _BASE.replace(optimizer="sgd", lr=10.0, seed=6)  # diverges in epoch 1, then dropped

POPULATIONS = {
    # Every member has seed 5: one batch shared by all (before, a folded first-layer matmul).
    "shared-seed": [
        *TARGETS,
        _BASE.replace(optimizer="adam", lr=0.001),
        _BASE.replace(optimizer="sgd", activation="sigmoid", lr=0.1),
    ],
    "first-in-range": [*TARGETS, *_same_rule([7, 9])],
    "middle-of-range": [*_same_rule([8]), *TARGETS, *_same_rule([1, 2, 3])],
    "last-in-range": [*_same_rule([0, 4]), *TARGETS],
    "beside-a-divergence": [_WILD, *_same_rule([3]), *TARGETS],
    "twice": [*TARGETS, *TARGETS, *_same_rule([1])],
}


@pytest.fixture(scope="module")
def splits(fashion):
    def make(dtype):
        kwargs = dict(mean=0.5, std=0.5, dtype=dtype)
        return (
            make_split(fashion.train_images[:N_TRAIN], fashion.train_labels[:N_TRAIN], **kwargs),
            make_split(fashion.test_images[:N_EVAL], fashion.test_labels[:N_EVAL], **kwargs),
        )

    return {dtype: make(dtype) for dtype in (torch.float32, torch.float64)}


@pytest.fixture(scope="module")
def alone(splits):
    """Each target trained on its own, per dtype."""
    return {
        dtype: {t: train([t], *splits[dtype], dtype=dtype)[0] for t in TARGETS} for dtype in splits
    }


def _assert_same_bits(got, expected):
    assert got.config == expected.config
    assert got.outcome is expected.outcome
    assert got.train_loss == expected.train_loss
    assert got.eval_loss == expected.eval_loss
    assert got.eval_accuracy == expected.eval_accuracy
    assert got.best_epoch == expected.best_epoch
    assert list(got.state_dict) == list(expected.state_dict)
    for key, tensor in expected.state_dict.items():
        diff = (got.state_dict[key] - tensor).abs().max().item()
        assert torch.equal(got.state_dict[key], tensor), f"{key}: max difference {diff:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(POPULATIONS))
def test_a_member_computes_the_same_bits_whoever_its_neighbours(splits, alone, dtype, name):
    configs = POPULATIONS[name]
    results = train(configs, *splits[dtype], dtype=dtype)
    checked = 0
    for config, result in zip(configs, results, strict=True):
        if config in TARGETS:
            _assert_same_bits(result, alone[dtype][config])
            checked += 1
    assert checked == len(TARGETS) * (2 if name == "twice" else 1)


def test_a_population_of_one_matches_a_split_population(splits, alone):
    """max_population regroups the same configurations: still the same bits."""
    dtype = torch.float32
    configs = POPULATIONS["middle-of-range"]
    whole = train(configs, *splits[dtype], dtype=dtype)
    regrouped = train(configs, *splits[dtype], dtype=dtype, max_population=2)
    for a, b in zip(whole, regrouped, strict=True):
        _assert_same_bits(b, a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "sgd"])
def test_an_optimizer_step_is_the_same_at_every_position(dtype, optimizer):
    """60 steps on random gradients: each member of a 13-member range (10-element bias rows
    at every offset modulo a SIMD width) ends with the bits it has alone."""
    configs = [Config(topology="T1", optimizer=optimizer, lr=0.002, seed=s) for s in range(13)]
    together = _stepped(configs, dtype)
    for m, config in enumerate(configs):
        alone = _stepped([config], dtype)
        for got, expected in zip(together, alone, strict=True):
            assert torch.equal(got[m], expected[0]), (config.seed, got.shape)


def _stepped(configs, dtype, n_steps=60):
    """The population's parameters after `n_steps` optimizer steps on seeded random gradients."""
    pop = Population.from_configs(configs, device="cpu", dtype=dtype)
    optimizer = StackedOptimizer(pop)
    # Three gradients per member, used in turn: random enough, and cheap to fill in.
    draws = [_gradients(config, pop.grads, dtype) for config in pop.configs]
    for step in range(n_steps):
        for m, member_draws in enumerate(draws):
            for grad, draw in zip(pop.grads, member_draws[step % 3], strict=True):
                grad[m] = draw
        optimizer.step()
    return pop.params


def _gradients(config, grads, dtype):
    generator = torch.Generator().manual_seed(config.seed)
    return [
        [torch.randn(g.shape[1:], generator=generator, dtype=dtype) * 1e-2 for g in grads]
        for _ in range(3)
    ]


def test_evaluation_loss_does_not_depend_on_population_size(splits, monkeypatch):
    """Evaluation runs in chunks whose size shrinks as the population grows (memory); a small
    chunk budget makes that happen on a small split."""
    monkeypatch.setattr(population_run, "_EVAL_CHUNK_ELEMENTS", 2**16)
    train_split, eval_split = splits[torch.float32]
    target = Config(topology="T1", optimizer="sgd", lr=0.05, seed=5, max_epochs=1)
    (alone,) = train([target], train_split, eval_split)
    crowd = [target.replace(seed=s) for s in range(6, 14)]
    beside = train([target, *crowd], train_split, eval_split)[0]
    _assert_same_bits(beside, alone)
