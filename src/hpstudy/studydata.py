"""The tensors a study trains on: loaded, verified, split and normalised as the study says.

    >>> data = prepare_data(study, RunOptions(limit_train=2000))
    >>> data.train, data.evaluation, data.test     # engine Splits
    >>> data.split                                 # the split's identity (part of trial keys)

The split dict (selection, sizes, validation seed, limits, normalisation, dtype) is part of every
trial's identity, so trials trained on other data never stand in for these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hpstudy.options import RunOptions
from hpstudy.study import Study


@dataclass
class Data:
    """The tensors a study trains on, and how they were made (part of every trial's identity)."""

    train: object  # engine Split: x (N, 784) normalised, y (N,)
    evaluation: object  # the selection split: test (paper) or validation (clean)
    test: object  # the test split (the same object as `evaluation` for the paper protocol)
    split: dict  # selection, sizes, validation seed, limits, normalisation
    digests: dict[str, str]  # canonical file name -> SHA-256
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    tf32: bool = False  # TensorFloat-32 matmuls (opt-in, CUDA only)
    cuda_graphs: bool = False  # replay training steps from CUDA graphs (CUDA only)

    def engine_options(self) -> dict:
        """Keyword arguments of `engine.train` that say where and how to train."""
        return {"device": self.device, "dtype": self.dtype, "tf32": self.tf32,
                "cuda_graphs": self.cuda_graphs}  # fmt: skip


def prepare_data(study: Study, options: RunOptions) -> Data:
    """Load, verify and split the data as the study says (and the limits allow)."""
    from hpstudy import data as datamod
    from hpstudy import engine

    ds = datamod.load(options.data_dir)
    train_x, train_y = ds.train_images, ds.train_labels
    split: dict = {"selection": study.selection.value, "normalization": study.normalization}
    if study.selection.is_leaky:
        eval_x, eval_y = ds.test_images, ds.test_labels
    else:
        train_idx, val_idx = datamod.stratified_split(train_y, study.validation_size,
                                                      study.validation_seed)  # fmt: skip
        eval_x, eval_y = train_x[val_idx], train_y[val_idx]
        train_x, train_y = train_x[train_idx], train_y[train_idx]
        split |= {
            "validation_size": study.validation_size,
            "validation_seed": study.validation_seed,
        }
    test_x, test_y = ds.test_images, ds.test_labels
    if options.limit_train:
        train_x, train_y = _subset(train_x, train_y, options.limit_train)
    if options.limit_eval:
        eval_x, eval_y = _subset(eval_x, eval_y, options.limit_eval)
        test_x, test_y = _subset(test_x, test_y, options.limit_eval)
    split |= {"n_train": len(train_y), "n_eval": len(eval_y), "n_test": len(test_y)}
    # "tf32" trains in float32 with TensorFloat-32 matmuls (CUDA only); it is part of the split
    # so that its trials never stand in for plain float32 ones.
    dtype = {"float32": torch.float32, "float64": torch.float64, "tf32": torch.float32}[
        options.dtype
    ]
    split["dtype"] = options.dtype
    norm = study.normalization

    def make(x: np.ndarray, y: np.ndarray):
        return engine.make_split(x, y, mean=norm["mean"], std=norm["std"], device=options.device,
                                 dtype=dtype)  # fmt: skip

    train, evaluation = make(train_x, train_y), make(eval_x, eval_y)
    test = evaluation if study.selection.is_leaky else make(test_x, test_y)
    return Data(
        train, evaluation, test, split, dict(ds.digests), options.device, dtype,
        tf32=options.dtype == "tf32", cuda_graphs=options.cuda_graphs,
    )  # fmt: skip


def _subset(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, stratified subset of n examples (all of them when n >= len)."""
    from hpstudy import data as datamod

    if n >= len(y):
        return x, y
    _, idx = datamod.stratified_split(y, n, seed=0)
    return x[idx], y[idx]
