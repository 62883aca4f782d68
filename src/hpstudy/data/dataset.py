"""One dataset as values: two splits, validated and read-only, with their names and digests.

    >>> ds = build("mine", x_train, y_train, x_test, y_test, ("a", "b"), digests={})
    >>> ds.input_shape, ds.n_classes, ds.n_overlap
    >>> train_idx, val_idx = stratified_split(ds.y_train, n_val=6_000, seed=42)

`hpstudy.data.datasets` loads a named set or the user's file into this shape;
`hpstudy.data.userdata` checks the user's arrays before they get here. What is computed from a
split's arrays alone lives here too: test rows that repeat training rows, pixel statistics, and
`stratified_split`, the seeded split of labels that cuts digits' test split
(`hpstudy.data.datasets`), a study's validation split and the `--limit-train`/`--limit-eval`
subsets (`hpstudy.data.prepare`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpstudy.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Two splits, validated: images uint8 (N, H, W) or features float32 (N, D); labels int64."""

    name: str  # the named dataset, or the user's file or folder as written
    x_train: np.ndarray
    y_train: np.ndarray  # (N,) in 0..n_classes-1, every class present
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    digests: Mapping[str, str]  # source file -> SHA-256 (decompressed; name.gz: as published)
    warnings: tuple[str, ...] = ()  # one line each, for the run to record and show
    n_overlap: int = 0  # test examples byte-identical to a training example
    source: Path | None = field(default=None, compare=False)  # the file or folder read

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def build(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: tuple[str, ...],
    digests: Mapping[str, str],
    *,
    source: Path | None = None,
) -> Dataset:
    """A `Dataset` of arrays already checked by `userdata.check` (or canonical), made read-only."""
    for array in (x_train, y_train, x_test, y_test):
        array.flags.writeable = False
    n_overlap = count_overlap(x_train, x_test)
    warnings = ()
    if n_overlap:
        warnings = (
            f"{n_overlap:,} of {len(x_test):,} test examples in {name} are byte-for-byte copies "
            "of training examples: their accuracy measures memory, not generalisation; remove "
            "them from the test split",
        )
    return Dataset(
        name, x_train, y_train, x_test, y_test, tuple(class_names), dict(digests),
        warnings, n_overlap, source,
    )  # fmt: skip


def count_overlap(x_train: np.ndarray, x_test: np.ndarray) -> int:
    """How many test rows equal some training row byte for byte."""

    def key(row: np.ndarray) -> bytes:  # 16 bytes a row, whatever its size
        return hashlib.blake2b(row.tobytes(), digest_size=16).digest()

    seen = {key(row) for row in x_train}
    return sum(key(row) in seen for row in x_test)


def pixel_statistics(x: np.ndarray, name: str) -> tuple[float, float]:
    """(mean, population std) of `x` as the model sees it before normalising: pixels / 255 for
    uint8 images, the raw values for float features."""
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    mean, std = x.mean(dtype=np.float64) / scale, x.std(dtype=np.float64) / scale
    if not std > 0:
        raise DataError(
            f"the training split of {name} is constant (every value {mean:g}): "
            "there is nothing to learn and no std to normalise by; check the data"
        )
    return float(mean), float(std)


def stratified_split(labels: np.ndarray, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): a seeded split with each class in proportion in the validation part."""
    if not 0 < n_val < len(labels):
        raise DataError(f"validation size must be between 1 and {len(labels) - 1}, got {n_val}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder allocation so the per-class quotas sum to n_val exactly.
    exact = counts * n_val / len(labels)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(quota - exact)[: n_val - quota.sum()]] += 1
    val = [
        rng.permutation(np.flatnonzero(labels == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx
