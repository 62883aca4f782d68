"""The fused optimizer step (engine.fused): every rule in one op sequence per tensor, held to the
same contract as the grouped step: torch.optim to rounding in float64, neighbour-free bits in
float32, and its own engine version on every result."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hpstudy import Config
from hpstudy.engine import train
from hpstudy.engine.optimizers import StackedOptimizer, engine_version
from hpstudy.engine.population import Population, member_order_key
from hpstudy.engine.reference import train_reference
from slices import fashion_splits
from test_engine import assert_one_step_matches_torch, max_weight_error

N_TRAIN, N_EVAL = 1200, 400

# Every rule the space has, in one population of one shape.
RULES = [
    dict(optimizer="sgd", lr=0.05),
    dict(optimizer="sgd", lr=0.02, momentum=0.9),
    dict(optimizer="sgd", lr=0.02, momentum=0.9, nesterov=True, activation="tanh"),
    dict(optimizer="sgd", lr=0.05, momentum=0.5, weight_decay=1e-3, schedule="step"),
    dict(optimizer="adam", lr=0.002, activation="elu"),
    dict(optimizer="adam", lr=0.001, weight_decay=1e-3),
    dict(optimizer="adam", lr=0.002, betas=(0.8, 0.99), schedule="cosine", activation="sigmoid"),
    dict(optimizer="rmsprop", lr=0.001, activation="leaky_relu"),
    dict(optimizer="rmsprop", lr=0.0005, weight_decay=1e-3, schedule="cosine"),
]


def _config(rule: dict, seed: int = 11, epochs: int = 2) -> Config:
    return Config(topology=(128, 64), seed=seed, max_epochs=epochs, patience=epochs, **rule)


def _splits(fashion, dtype):
    return fashion_splits(fashion, N_TRAIN, N_EVAL, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_one_fused_step_matches_torch_optim_to_rounding(fashion, dtype):
    """15 optimizer x activation cases plus the wider rules, one population, one step."""
    train_split, _ = _splits(fashion, dtype)
    lrs = {"sgd": 0.05, "adam": 0.002, "rmsprop": 0.001}
    acts = ["relu", "sigmoid", "tanh", "leaky_relu", "elu"]
    configs = [Config(topology="T4", optimizer=o, activation=a, lr=lrs[o], seed=7)
               for o, a in itertools.product(lrs, acts)]  # fmt: skip
    configs += [_config(r).replace(topology="T4", seed=7) for r in RULES]
    configs = sorted(set(configs), key=member_order_key)
    assert_one_step_matches_torch(configs, train_split, dtype, step="fused")


@pytest.fixture(scope="module")
def fused_float64(fashion):
    splits = _splits(fashion, torch.float64)
    configs = [_config(r) for r in RULES]
    return configs, train(configs, *splits, dtype=torch.float64, optimizer_step="fused"), splits


@pytest.mark.parametrize("i", range(len(RULES)))
def test_fused_member_matches_plain_pytorch_in_float64(fused_float64, i):
    """Two epochs (momentum buffers and Adam's bias correction past the first step, a schedule
    across an epoch boundary) against nn + torch.optim + lr_scheduler."""
    configs, results, (train_split, eval_split) = fused_float64
    result, ref = results[i], train_reference(configs[i], train_split, eval_split)
    assert result.engine == engine_version("fused")
    assert result.epochs_run == len(ref.train_loss) == 2
    assert result.train_loss == pytest.approx(ref.train_loss, rel=1e-9)
    assert result.eval_loss == pytest.approx(ref.eval_loss, rel=1e-9)
    assert result.eval_accuracy == ref.eval_accuracy
    assert result.best_epoch == 2
    assert max_weight_error(ref.model, result.state_dict) < 1e-9


def test_the_float64_contract_would_see_a_wrong_momentum(fused_float64):
    """The check above can fail: momentum 0.89 instead of 0.9 is far outside its bound."""
    configs, results, (train_split, eval_split) = fused_float64
    i = next(k for k, c in enumerate(configs) if c.momentum == 0.9 and not c.nesterov)
    ref = train_reference(configs[i].replace(momentum=0.89), train_split, eval_split)
    assert max_weight_error(ref.model, results[i].state_dict) > 1e-6


def _assert_same_bits(got, expected):
    assert got.train_loss == expected.train_loss
    assert got.eval_loss == expected.eval_loss
    for key, tensor in expected.state_dict.items():
        assert torch.equal(got.state_dict[key], tensor), key


def test_fused_float32_bits_do_not_depend_on_neighbours(fashion):
    """Each rule alone, then beside every other rule (and seeds that move its position):
    the same float32 bits, a divergence among the neighbours included."""
    splits = _splits(fashion, torch.float32)
    targets = [_config(RULES[k]) for k in (1, 2, 4, 7, 8)]  # momentum, Nesterov, Adam, RMSprop
    wild = _config(dict(optimizer="sgd", lr=10.0), seed=6)  # diverges, then is dropped
    neighbours = [_config(r, seed=s) for r in RULES for s in (3, 12)] + [wild]
    together = train(targets + neighbours, *splits, optimizer_step="fused")
    assert together[-1].outcome.value == "diverged"
    for k, target in enumerate(targets):
        (alone,) = train([target], *splits, optimizer_step="fused")
        _assert_same_bits(together[k], alone)


def test_the_default_is_the_grouped_step_and_each_result_names_its_engine(fashion):
    """The two paths agree to rounding in float32, not necessarily bit for bit: the version
    tells them apart."""
    splits = _splits(fashion, torch.float32)
    config = _config(RULES[4], epochs=1)
    (grouped,) = train([config], *splits)
    (fused,) = train([config], *splits, optimizer_step="fused")
    assert grouped.engine == engine_version() == "1-grouped"
    assert fused.engine == "1-fused"
    assert fused.train_loss == pytest.approx(grouped.train_loss, rel=1e-4)


def test_an_unknown_step_is_refused_in_one_line(fashion):
    with pytest.raises(ValueError, match="optimizer step must be one of grouped, fused"):
        train([_config(RULES[0])], *_splits(fashion, torch.float32), optimizer_step="triton")


def test_a_cnn_population_takes_the_fused_step_too(fashion):
    """CNN members (batch norm's weights and biases are rows like any other) train with the
    fused step as with the grouped one, to rounding in float64."""
    splits = _splits(fashion, torch.float64)
    small = dict(topology=(16,), conv=(4, 8), seed=7, batch_size=50, max_epochs=1)
    configs = [Config(**small, optimizer="adam", lr=0.002, batch_norm=True),
               Config(**small, optimizer="sgd", lr=0.05, momentum=0.9, activation="tanh"),
               Config(**small, optimizer="rmsprop", lr=0.001, batch_norm=True)]  # fmt: skip
    grouped = train(configs, *splits, dtype=torch.float64)
    fused = train(configs, *splits, dtype=torch.float64, optimizer_step="fused")
    for g, f in zip(grouped, fused, strict=True):
        assert f.engine == "1-fused"
        assert f.train_loss == pytest.approx(g.train_loss, rel=1e-10)
        error = max((g.state_dict[k] - f.state_dict[k]).abs().max().item() for k in g.state_dict)
        assert error < 1e-10, g.config


class _OpCounter(TorchDispatchMode):
    """Counts the ATen ops that run, views left out (on a GPU each is a kernel launch)."""

    def __init__(self):
        super().__init__()
        self.n_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n_ops += not func.is_view
        return func(*args, **(kwargs or {}))


def _update_ops(configs, step: str) -> int:
    pop = Population.from_configs(sorted(configs, key=member_order_key), device="cpu",
                                  dtype=torch.float32)  # fmt: skip
    optimizer = StackedOptimizer(pop, step=step)
    optimizer.step()  # past SGD's first step
    with _OpCounter() as counter:
        optimizer.step()
    return counter.n_ops


def test_a_fused_step_runs_as_many_ops_for_many_rules_as_for_one():
    """What the fused step is for: the ops of one update do not grow with the number of (rule,
    lr) groups, where the grouped step's do. (They depend on which state and terms some member
    needs: here weight decay, momentum buffers and second moments in both.)"""
    many = [_config(r, seed=s) for r in RULES for s in (1, 2)]  # 9 rules
    one = [_config(RULES[5], seed=s) for s in range(len(many))]  # one Adam rule, weight decay
    one[0] = _config(RULES[1])  # and one SGD momentum member, so both need the same state
    assert _update_ops(many, "fused") == _update_ops(one, "fused")
    assert _update_ops(many, "grouped") > 3 * _update_ops(one, "grouped")
