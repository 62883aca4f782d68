"""A dataset a study trains on: a named canonical one, scikit-learn's digits, or the user's own.

    >>> from hpstudy.datasets import load_dataset, normalization_of
    >>> ds = load_dataset({"name": "digits", "test_size": 0.2, "split_seed": 0})
    >>> ds.input_shape, ds.n_classes, len(ds.y_test)
    ((8, 8), 10, 359)
    >>> ds = load_dataset({"path": "my-data.npz"})   # x_train, y_train, x_test, y_test[, classes]
    >>> normalization_of(ds, {"normalization": "auto"})   # from the training split
    (0.1307..., 0.3081...)

`spec` is a study file's `[data]` table: `name` ("fashion-mnist", "mnist", "kmnist", "digits") or
`path` (an `.npz`, or a folder of the four IDX files under their MNIST names, gzip or not), plus
`test_size` and `split_seed` (digits only) and `normalization`. FashionMNIST is `data.load`;
MNIST and KMNIST are `catalog.load_idx`. Every problem with the data is a `DataError`, one line
naming the file, the problem and the fix; a test split that repeats training examples byte for
byte is not an error but a warning in `Dataset.warnings` (the library never prints).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpstudy import catalog, data, userdata
from hpstudy.errors import DataError, UserError

NAMES = ("fashion-mnist", "mnist", "kmnist", "digits")


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


def load_dataset(
    spec: Mapping,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Dataset:
    """The dataset `spec` describes. `data_dir` (the CLI's --data-dir) is where a named IDX
    dataset is looked for first; `progress` gets one line per download step."""
    if ("name" in spec) == ("path" in spec):
        raise UserError(
            f"[data] needs exactly one of name = {' | '.join(map(repr, NAMES))} or path = "
            f"'file.npz' / 'folder', got {dict(spec)!r}"
        )
    if "path" in spec:
        return userdata.load(Path(spec["path"]).expanduser())
    name = spec["name"]
    if name == "fashion-mnist":
        fm = data.load(data_dir, download=download, progress=progress)
        arrays = (fm.train_images, fm.train_labels, fm.test_images, fm.test_labels)
        return build(name, *arrays, data.CLASS_NAMES, fm.digests, source=fm.source)
    if name in catalog.SOURCES:
        src = catalog.SOURCES[name]
        arrays, digests, folder = catalog.load_idx(
            src, data_dir, download=download, progress=progress
        )
        x, y = arrays["train_images"], arrays["train_labels"].astype(np.int64)
        xt, yt = arrays["test_images"], arrays["test_labels"].astype(np.int64)
        return build(name, x, y, xt, yt, src.class_names, digests, source=folder)
    if name == "digits":
        return _digits(spec)
    raise UserError(f"[data] name must be one of {', '.join(NAMES)}, got name={name!r}")


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


def _digits(spec: Mapping) -> Dataset:
    """scikit-learn's 8x8 digits (values 0..16, kept as uint8), split as `spec` says."""
    from importlib import resources

    from sklearn.datasets import load_digits

    test_size, seed = spec.get("test_size"), spec.get("split_seed")
    if test_size is None or seed is None:
        raise UserError(
            "[data] name = 'digits' has no test split of its own: give test_size (a fraction, "
            "e.g. 0.2, or a count) and split_seed (an integer), e.g. test_size = 0.2, "
            f"split_seed = 0; got test_size={test_size!r}, split_seed={seed!r}"
        )
    bunch = load_digits()
    images, labels = bunch.images.astype(np.uint8), bunch.target.astype(np.int64)
    n_test = _n_test(test_size, len(labels))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"[data] split_seed must be an integer >= 0, got split_seed={seed!r}")
    train_idx, test_idx = data.stratified_split(labels, n_test, seed)
    bundled = resources.files("sklearn.datasets.data") / "digits.csv.gz"
    digests = {
        "sklearn/datasets/data/digits.csv.gz": hashlib.sha256(bundled.read_bytes()).hexdigest()
    }
    return build(
        "digits", images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
        tuple(str(d) for d in range(10)), digests,
    )  # fmt: skip


def _n_test(test_size: object, n: int) -> int:
    """`test_size` as a count: a fraction in (0, 1) or a count in 1..n-1 (at least one per class
    is up to the caller: the split is stratified, so a tiny test split may miss classes)."""
    if isinstance(test_size, float) and 0 < test_size < 1:
        return max(1, round(test_size * n))
    if isinstance(test_size, int) and not isinstance(test_size, bool) and 0 < test_size < n:
        return test_size
    raise UserError(
        f"[data] test_size must be a fraction in (0, 1) or a count in 1..{n - 1}, got "
        f"test_size={test_size!r}"
    )


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


def normalization_of(dataset: Dataset, spec: Mapping) -> tuple[float, float]:
    """(mean, std) of the values the model sees before normalising: pixels / 255 for uint8
    images, the raw values for float features. `spec["normalization"]` is "auto" (from the
    training split, population std), [mean, std] or {mean = ..., std = ...}; absent means
    FashionMNIST's published statistics for fashion-mnist and "auto" for the rest."""
    given = spec.get("normalization")
    if given is None and dataset.name == "fashion-mnist":
        return data.PIXEL_MEAN, data.PIXEL_STD
    if given is None or given == "auto":
        return pixel_statistics(dataset.x_train, dataset.name)
    if isinstance(given, Mapping) and set(given) == {"mean", "std"}:
        given = [given["mean"], given["std"]]
    if isinstance(given, list | tuple) and len(given) == 2:
        mean, std = given
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in given)
        if numbers and math.isfinite(mean) and math.isfinite(std) and std > 0:
            return float(mean), float(std)
    raise UserError(
        'normalization must be "auto", [mean, std] or {mean = ..., std = ...} with a finite '
        f"mean and a std > 0, got normalization={given!r}"
    )
