"""Small slices of the real FashionMNIST as engine splits: what the engine tests train on."""

from __future__ import annotations

import torch

from hpstudy.data.fashion_mnist import FashionMNIST
from hpstudy.engine import make_split


def fashion_splits(fashion: FashionMNIST, n_train: int, n_eval: int,
                   dtype: torch.dtype = torch.float32):  # fmt: skip
    """(train, evaluation): the first `n_train` training and `n_eval` test images, normalised
    as the paper does (mean 0.5, std 0.5)."""
    kwargs = dict(mean=0.5, std=0.5, dtype=dtype)
    return (
        make_split(fashion.train_images[:n_train], fashion.train_labels[:n_train], **kwargs),
        make_split(fashion.test_images[:n_eval], fashion.test_labels[:n_eval], **kwargs),
    )
