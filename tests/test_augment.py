"""Training-image augmentation: flips and shifts drawn from (seed, epoch), the same in a
population as in the plain loop, whoever a member's neighbours are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpstudy import Config
from hpstudy.config.choices import MAX_SHIFT
from hpstudy.engine import make_split, train
from hpstudy.engine.augment import Draws, augment, epoch_draws, population_draws
from hpstudy.engine.reference import train_reference
from hpstudy.errors import UserError

SMALL_CNN = dict(topology=(16,), conv=(4, 8), seed=7, batch_size=50, max_epochs=1)


def _splits(fashion, dtype, n=200):
    kwargs = dict(mean=0.5, std=0.5, dtype=dtype)
    return (make_split(fashion.train_images[:n], fashion.train_labels[:n], **kwargs),
            make_split(fashion.test_images[:n], fashion.test_labels[:n], **kwargs))  # fmt: skip


def _shift_then_flip(image: np.ndarray, dy: int, dx: int, flip: bool) -> np.ndarray:
    """What torchvision's RandomCrop(28, padding=2, padding_mode='edge') then
    RandomHorizontalFlip do, written with numpy: pad with the edge, crop, mirror."""
    padded = np.pad(image, MAX_SHIFT, mode="edge")
    crop = padded[MAX_SHIFT + dy : MAX_SHIFT + dy + 28, MAX_SHIFT + dx : MAX_SHIFT + dx + 28]
    return crop[:, ::-1] if flip else crop


def test_augment_shifts_with_edge_padding_then_flips_real_images(fashion):
    images = fashion.train_images[:4].astype(np.float32)
    cases = [(0, 0, False), (2, -1, True), (-2, 2, False), (1, 0, True)]
    flip, dy, dx = zip(*[(f, dy, dx) for dy, dx, f in cases], strict=True)
    draws = Draws(torch.tensor(flip), torch.tensor(dy), torch.tensor(dx))
    out = augment(torch.from_numpy(images.reshape(4, -1)), draws, side=28)
    for image, (dy, dx, flip), got in zip(images, cases, out, strict=True):
        assert np.array_equal(got.numpy().reshape(28, 28), _shift_then_flip(image, dy, dx, flip))
    assert np.array_equal(out[0].numpy(), images[0].reshape(-1))  # no draw, no change


def test_per_member_draws_turn_a_shared_batch_into_one_batch_per_member(fashion):
    x = torch.from_numpy(fashion.train_images[:3].reshape(3, -1).astype(np.float32))
    flip = torch.tensor([[False, False, False], [True, True, True]])
    zero = torch.zeros(2, 3, dtype=torch.int64)
    out = augment(x, Draws(flip, zero, zero), side=28)
    assert out.shape == (2, 3, 784)
    assert torch.equal(out[0], x)
    assert torch.equal(out[1].view(3, 28, 28), x.view(3, 28, 28).flip(-1))


def test_draws_depend_on_seed_and_epoch_and_use_only_what_the_member_augments():
    flip_shift = Config(augment="flip-shift", seed=5)
    a, b = epoch_draws(flip_shift, 1, 1000), epoch_draws(flip_shift, 1, 1000)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("flip", "dy", "dx"))
    assert not torch.equal(a.dy, epoch_draws(flip_shift, 2, 1000).dy)
    assert not torch.equal(a.dy, epoch_draws(flip_shift.replace(seed=6), 1, 1000).dy)
    assert set(a.dy.tolist()) == set(range(-MAX_SHIFT, MAX_SHIFT + 1))
    assert 0.4 < a.flip.double().mean().item() < 0.6
    flip_only = epoch_draws(flip_shift.replace(augment="flip"), 1, 1000)
    assert torch.equal(flip_only.flip, a.flip) and not flip_only.dy.any() and not flip_only.dx.any()
    shift_only = epoch_draws(flip_shift.replace(augment="shift"), 1, 1000)
    assert torch.equal(shift_only.dx, a.dx) and not shift_only.flip.any()
    plain = [Config(seed=1), Config(seed=2)]
    assert population_draws(plain, 1, 10, "cpu") is None
    alike = [flip_shift, flip_shift.replace(lr=0.1)]  # one seed, one augmentation
    assert population_draws(alike, 1, 10, "cpu").dy.shape == (10,)
    assert population_draws([flip_shift, Config(seed=5)], 1, 10, "cpu").dy.shape == (2, 10)


def test_augmented_population_matches_plain_pytorch_in_float64(fashion):
    """The contract with augmentation: members that flip, shift, both or neither, of one seed
    and of others, CNN and MLP, each match their plain loop to 1e-9 after one epoch. Without
    the engine's augmentation the augmented members would be far off."""
    train_split, eval_split = _splits(fashion, torch.float64)
    cnn = Config(**SMALL_CNN, optimizer="adam", lr=0.002, batch_norm=True, augment="flip_shift")
    configs = [
        cnn,
        cnn.replace(augment="none"),
        cnn.replace(augment="flip", lr=0.001),
        cnn.replace(seed=8),
        cnn.replace(augment="shift", seed=9, dropout=0.3),
    ]
    mlp = Config(topology=(32,), optimizer="sgd", lr=0.05, batch_size=50, max_epochs=1)
    configs += [mlp.replace(augment="flip_shift"), mlp.replace(augment="flip_shift", seed=3),
                mlp]  # fmt: skip
    results = train(configs, train_split, eval_split, dtype=torch.float64)
    for config, result in zip(configs, results, strict=True):
        ref = train_reference(config, train_split, eval_split)
        expected = ref.model.state_dict()
        error = max((expected[k] - result.state_dict[k]).abs().max().item() for k in expected)
        assert error < 1e-9, config
        assert result.train_loss[0] == pytest.approx(ref.train_loss[0], rel=1e-10)
    # And augmentation changed what was learnt.
    assert results[0].train_loss != results[1].train_loss


def test_an_augmented_member_computes_the_same_bits_whoever_its_neighbours_are(fashion):
    train_split, eval_split = _splits(fashion, torch.float32)
    target = Config(**SMALL_CNN | {"max_epochs": 2}, optimizer="adam", lr=0.002,
                    batch_norm=True, augment="flip_shift")  # fmt: skip
    (alone,) = train([target], train_split, eval_split)
    neighbours = ([target.replace(seed=3), target.replace(augment="none", seed=9)],
                  [target.replace(lr=0.001), target.replace(augment="flip")])  # fmt: skip
    for others in neighbours:
        mixed = train([*others, target], train_split, eval_split)[-1]
        assert mixed.train_loss == alone.train_loss
        for key, tensor in alone.state_dict.items():
            assert torch.equal(mixed.state_dict[key], tensor), key


def test_augmentation_is_named_and_needs_images():
    assert Config(augment="Flip-Shift").augment == "flip_shift"
    assert "augment" not in Config().to_dict()  # trial keys as before augmentation existed
    assert Config(augment="flip").to_dict()["augment"] == "flip"
    with pytest.raises(UserError, match="unknown augmentation 'rotate'"):
        Config(augment="rotate")
    with pytest.raises(UserError, match="use augment = 'none' for feature data"):
        Config(augment="flip", n_inputs=10, topology=(8,))
