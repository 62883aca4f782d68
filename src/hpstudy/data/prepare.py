"""The tensors a study trains on: loaded, verified, split and normalised as the study says.

    >>> data = prepare_data(study, RunOptions(limit_train=2000))
    >>> data.train, data.evaluation, data.test     # engine Splits
    >>> data.split                                 # the split's identity (part of trial keys)

The split dict (selection, sizes, validation seed, limits, normalisation, dtype, and for data
other than FashionMNIST the data's name or digest) is part of every trial's identity, so trials
trained on other data never stand in for these. The data comes from `datasets.load_dataset`
(the study's [data] table; FashionMNIST when it has none).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from hpstudy.config.study import AUTO, Study
from hpstudy.errors import UserError


@dataclass
class Data:
    """The tensors a study trains on, and how they were made (part of every trial's identity)."""

    train: object  # engine Split: x (N, D) normalised (D = 784 for FashionMNIST), y (N,)
    evaluation: object  # the selection split: test (paper) or validation (clean)
    test: object  # the test split (the same object as `evaluation` for the paper protocol)
    split: dict  # selection, sizes, validation seed, limits, normalisation (and the data's name)
    digests: dict[str, str]  # source file name -> SHA-256
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    tf32: bool = False  # TensorFloat-32 matmuls (opt-in, CUDA only)
    cuda_graphs: bool = False  # replay training steps from CUDA graphs (CUDA only)
    concurrent_populations: bool | None = None  # populations together (None: on CUDA only)
    optimizer_step: str = "grouped"  # the engine's optimizer step path (engine.optimizers)
    class_names: tuple[str, ...] = ()  # one per label 0..K-1
    input_shape: tuple[int, ...] = (28, 28)  # (H, W) images or (D,) features
    pixel_max: int | None = 255  # largest pixel value images use (digits: 16); None: features
    warnings: tuple[str, ...] = ()  # one line each about the data (e.g. train/test overlap)

    @property
    def normalization(self) -> dict[str, float]:
        """{"mean", "std"} the inputs were normalised with (resolved when the study says auto)."""
        norm = self.split["normalization"]
        return {"mean": norm["mean"], "std": norm["std"]}

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def engine_options(self) -> dict:
        """Keyword arguments of `engine.train` that say where and how to train."""
        return {"device": self.device, "dtype": self.dtype, "tf32": self.tf32,
                "cuda_graphs": self.cuda_graphs,
                "concurrent_populations": self.concurrent_populations,
                "optimizer_step": self.optimizer_step}  # fmt: skip

    def describe(self) -> dict:
        """What run.json records about the data (the report and `predict` read it back)."""
        return {"name": self.split.get("data", "fashion-mnist"), "input_shape":
                list(self.input_shape), "class_names": list(self.class_names),
                "pixel_max": self.pixel_max, "warnings": list(self.warnings)}  # fmt: skip


class DataOptions(Protocol):
    """What `prepare_data` needs to know beyond the study: `runner.options.RunOptions` has these
    (declared here, so the data layer does not import the runner above it)."""

    data_dir: str | None
    limit_train: int | None
    limit_eval: int | None
    device: str
    dtype: str  # float32, float64, or tf32
    cuda_graphs: bool | None


def load_study_data(study: Study, options: DataOptions):
    """The study's `datasets.Dataset`, loaded and validated (a DataError/UserError if bad)."""
    from hpstudy.data.datasets import load_dataset

    return load_dataset(study.data or {"name": "fashion-mnist"}, options.data_dir)


def data_identity(study: Study, ds) -> dict | str:
    """How the split names non-FashionMNIST data: its name (digits: with its split), or for the
    user's own data the file's name and a digest of its contents."""
    if "path" in study.data:
        blob = json.dumps(sorted(ds.digests.items())).encode()
        return {"file": Path(study.data["path"]).name,
                "sha256": hashlib.sha256(blob).hexdigest()}  # fmt: skip
    if study.data["name"] == "digits":
        return {k: study.data[k] for k in ("name", "test_size", "split_seed")}
    return study.data["name"]


def prepare_data(study: Study, options: DataOptions, dataset=None) -> Data:
    """Load, verify and split the data as the study says (and the limits allow); `dataset`
    is the study's `datasets.Dataset` when the caller has loaded it already."""
    from hpstudy import engine
    from hpstudy.data.dataset import pixel_statistics, stratified_split

    ds = dataset if dataset is not None else load_study_data(study, options)
    train_x, train_y = ds.x_train, ds.y_train
    split: dict = {"selection": study.selection.value, "normalization": None}  # set below
    if not study.is_fashion_mnist:
        split["data"] = data_identity(study, ds)
    if study.selection.is_leaky:
        eval_x, eval_y = ds.x_test, ds.y_test
    else:
        if study.validation_size >= len(train_y):
            raise UserError(
                f"{study.path}: validation.size must be below the {len(train_y):,} training "
                f"examples of {study.data_label}, got {study.validation_size:,}; lower it (a "
                "tenth of the training split is usual)"
            )
        train_idx, val_idx = stratified_split(train_y, study.validation_size, study.validation_seed)
        eval_x, eval_y = train_x[val_idx], train_y[val_idx]
        train_x, train_y = train_x[train_idx], train_y[train_idx]
        split |= {
            "validation_size": study.validation_size,
            "validation_seed": study.validation_seed,
        }
    if study.normalization == AUTO:
        # From the images the model trains on: a validation split's images are held out of
        # its statistics as they are of training (the limits below are quick tries; they keep
        # a full run's statistics).
        mean, std = pixel_statistics(train_x, ds.name)
        source = "training split" if study.selection.is_leaky else "training split less validation"
        norm = {"mean": mean, "std": std, "from": source}
    else:
        norm = dict(study.normalization)
    split["normalization"] = norm
    test_x, test_y = ds.x_test, ds.y_test
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

    def make(x: np.ndarray, y: np.ndarray):
        return engine.make_split(x, y, mean=norm["mean"], std=norm["std"], device=options.device,
                                 dtype=dtype)  # fmt: skip

    train, evaluation = make(train_x, train_y), make(eval_x, eval_y)
    test = evaluation if study.selection.is_leaky else make(test_x, test_y)
    pixel_max = None
    if ds.x_train.dtype == np.uint8:
        pixel_max = 16 if study.data.get("name") == "digits" else 255
    return Data(
        train, evaluation, test, split, dict(ds.digests), options.device, dtype,
        tf32=options.dtype == "tf32", cuda_graphs=options.cuda_graphs,
        optimizer_step=getattr(options, "optimizer_step", "grouped"),
        concurrent_populations=getattr(options, "concurrent_populations", None),
        class_names=tuple(ds.class_names), input_shape=tuple(ds.input_shape),
        pixel_max=pixel_max, warnings=tuple(ds.warnings),
    )  # fmt: skip


def _subset(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, stratified subset of n examples (all of them when n >= len)."""
    from hpstudy.data.dataset import stratified_split

    if n >= len(y):
        return x, y
    _, idx = stratified_split(y, n, seed=0)
    return x[idx], y[idx]
