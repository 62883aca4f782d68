"""The exactness contract for the wider space: momentum, Nesterov, weight decay, Adam's betas,
learning-rate schedules, dropout and batch size, each against plain nn + torch.optim."""

from __future__ import annotations

import pytest
import torch

from hpstudy import Config
from hpstudy.engine import make_split, train
from hpstudy.engine.dropout import dropout_generator, dropout_mask, with_seeded_dropout
from hpstudy.engine.model import build_mlp
from hpstudy.engine.reference import train_reference
from hpstudy.engine.schedules import epoch_lr
from hpstudy.engine.training import plan_populations

N_TRAIN, N_EVAL, EPOCHS = 1500, 500, 3

# Each member differs from plain SGD in the new factors; all share one shape (one population)
# except the batch-size member, which the engine trains as a population of its own.
MEMBERS = {
    "sgd": dict(optimizer="sgd", lr=0.05),
    "momentum": dict(optimizer="sgd", lr=0.02, momentum=0.9),
    "nesterov": dict(optimizer="sgd", lr=0.02, momentum=0.9, nesterov=True),
    "sgd-wd-step": dict(optimizer="sgd", lr=0.05, momentum=0.5, weight_decay=1e-3,
                        schedule="step"),
    "adam-wd": dict(optimizer="adam", lr=0.002, weight_decay=1e-3),
    "adam-betas": dict(optimizer="adam", lr=0.002, betas=(0.8, 0.99)),
    "adam-cosine": dict(optimizer="adam", lr=0.002, schedule="cosine", activation="tanh"),
    "rmsprop-wd-cosine": dict(optimizer="rmsprop", lr=0.001, weight_decay=1e-3,
                              schedule="cosine", activation="elu"),
    "dropout": dict(optimizer="sgd", lr=0.05, dropout=0.3),
    "adam-dropout-cosine": dict(optimizer="adam", lr=0.002, dropout=0.2, schedule="cosine",
                                activation="leaky_relu"),
    "batch-128": dict(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=128, dropout=0.1),
}  # fmt: skip


def _config(name: str) -> Config:
    return Config(topology=(128, 64), seed=11, max_epochs=EPOCHS, patience=EPOCHS,
                  **MEMBERS[name])  # fmt: skip


def _splits(fashion, dtype):
    kwargs = dict(mean=0.5, std=0.5, dtype=dtype)
    return (
        make_split(fashion.train_images[:N_TRAIN], fashion.train_labels[:N_TRAIN], **kwargs),
        make_split(fashion.test_images[:N_EVAL], fashion.test_labels[:N_EVAL], **kwargs),
    )


@pytest.fixture(scope="module")
def wide_float64(fashion):
    splits = _splits(fashion, torch.float64)
    configs = [_config(name) for name in MEMBERS]
    return configs, train(configs, *splits, dtype=torch.float64), splits


@pytest.mark.parametrize("name", list(MEMBERS))
def test_new_factor_member_matches_plain_pytorch_in_float64(wide_float64, name):
    configs, results, (train_split, eval_split) = wide_float64
    i = list(MEMBERS).index(name)
    result, ref = results[i], train_reference(configs[i], train_split, eval_split)
    assert result.epochs_run == len(ref.train_loss) == EPOCHS
    assert result.train_loss == pytest.approx(ref.train_loss, rel=1e-9)
    assert result.eval_loss == pytest.approx(ref.eval_loss, rel=1e-9)
    assert result.eval_accuracy == ref.eval_accuracy
    assert result.best_epoch == EPOCHS  # so the best-epoch weights are the last epoch's
    expected = ref.model.state_dict()
    assert list(expected) == list(result.state_dict)
    error = max((expected[k] - result.state_dict[k]).abs().max().item() for k in expected)
    assert error < 1e-9


def test_the_contract_would_see_a_wrong_argument(wide_float64):
    """The comparison above is sharp: momentum 0.9 and 0.89 part after three epochs."""
    configs, results, (train_split, eval_split) = wide_float64
    i = list(MEMBERS).index("momentum")
    ref = train_reference(configs[i].replace(momentum=0.89), train_split, eval_split)
    assert results[i].train_loss[-1] != pytest.approx(ref.train_loss[-1], rel=1e-6)


def test_members_differing_in_scalar_arguments_share_a_population():
    configs = [_config(name) for name in MEMBERS]
    populations = plan_populations(configs, device=torch.device("cpu"), dtype=torch.float32)
    batch_128 = list(MEMBERS).index("batch-128")
    assert sorted(map(sorted, populations)) == sorted(
        [[i for i in range(len(configs)) if i != batch_128], [batch_128]]
    )


def test_schedules_are_torchs_own_rates():
    cosine = Config(lr=0.1, schedule="cosine", max_epochs=20)
    assert epoch_lr(cosine, 1) == 0.1
    assert epoch_lr(cosine, 11) == pytest.approx(0.05, rel=1e-12)
    assert epoch_lr(cosine, 20) < epoch_lr(cosine, 19) < epoch_lr(cosine, 2) < 0.1
    step = Config(lr=0.1, schedule="step", max_epochs=9)  # step_size 3, gamma 0.1
    assert [epoch_lr(step, e) for e in (1, 3, 4, 7)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert {epoch_lr(Config(lr=0.1), e) for e in range(1, 21)} == {0.1}


def test_dropout_masks_follow_seed_and_epoch_and_scale_like_nn_dropout():
    def mask(seed, epoch):
        generator = dropout_generator(seed, epoch, "cpu")
        return dropout_mask(generator, (200, 50), 0.25, dtype=torch.float64)

    first = mask(1, 1)
    assert set(first.unique().tolist()) == {0.0, 1 / 0.75}
    assert 0.2 < (first == 0).double().mean().item() < 0.3
    assert torch.equal(first, mask(1, 1))
    assert not torch.equal(first, mask(1, 2)) and not torch.equal(first, mask(2, 1))


def test_saved_dropout_model_is_plain_nn_and_the_reference_swaps_only_dropout():
    config = _config("dropout")
    net = build_mlp(config)
    assert sum(isinstance(m, torch.nn.Dropout) for m in net) == 2
    swapped, slot = with_seeded_dropout(build_mlp(config))
    assert not any(isinstance(m, torch.nn.Dropout) for m in swapped)
    assert list(swapped.state_dict()) == list(net.state_dict())
    x = torch.ones(4, 784)
    slot[0] = dropout_generator(0, 1, "cpu")
    swapped.eval()
    assert torch.equal(swapped(x), swapped(x))  # no dropout at evaluation


def test_a_dropout_member_is_the_same_alone_and_beside_others_in_float32(fashion):
    splits = _splits(fashion, torch.float32)
    alone = train([_config("adam-dropout-cosine")], *splits)[0]
    together = train([_config(n) for n in MEMBERS], *splits)
    beside = together[list(MEMBERS).index("adam-dropout-cosine")]
    assert beside.train_loss == alone.train_loss
    assert beside.eval_accuracy == alone.eval_accuracy
    for key, tensor in alone.state_dict.items():
        assert torch.equal(tensor, beside.state_dict[key])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (dict(momentum=1.5), r"momentum must be a number in \[0, 1\), got momentum=1.5"),
        (dict(dropout=1.0), r"dropout must be a number in \[0, 1\), got dropout=1.0"),
        (dict(weight_decay=-1e-4), r"weight_decay must be a number >= 0"),
        (dict(nesterov=True), r"nesterov = true needs momentum > 0"),
        (dict(optimizer="adam", betas=(0.9, 1.0)), r"betas must be a number in \[0, 1\)"),
        (dict(schedule="linear"), r"unknown schedule 'linear'; expected one of: constant"),
    ],
)
def test_a_value_outside_its_domain_is_refused_in_one_line(values, message):
    from hpstudy.errors import UserError

    with pytest.raises(UserError, match=message) as error:
        Config(**values)
    assert "\n" not in str(error.value)
