"""A dataset a study trains on: a named canonical one, scikit-learn's digits, or the user's own.

    >>> from hpstudy.data.datasets import load_dataset
    >>> ds = load_dataset({"name": "digits", "test_size": 0.2, "split_seed": 0})
    >>> ds.input_shape, ds.n_classes, len(ds.y_test)
    ((8, 8), 10, 359)
    >>> ds = load_dataset({"path": "my-data.npz"})   # x_train, y_train, x_test, y_test[, classes]

`spec` is a study file's `[data]` table: `name` ("fashion-mnist", "mnist", "kmnist", "digits") or
`path` (an `.npz`, or a folder of the four IDX files under their MNIST names, gzip or not), plus
`test_size` and `split_seed` (digits only); `normalization` is the study file's
(`hpstudy.config.studyfile`), applied by `hpstudy.data.prepare`. FashionMNIST is `sources.load`;
MNIST and KMNIST are `sources.load_idx`. Every problem with the data is a `DataError`, one line
naming the file, the problem and the fix; a test split that repeats training examples byte for
byte is not an error but a warning in `Dataset.warnings` (the library never prints).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping

import numpy as np

from hpstudy.config.paths import os_errors, user_path
from hpstudy.config.study import DATA_NAMES
from hpstudy.data import catalog, fashion_mnist, sources, userdata
from hpstudy.data.dataset import Dataset, build, stratified_split
from hpstudy.errors import DataError, UserError


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
            f"[data] needs exactly one of name = {' | '.join(map(repr, DATA_NAMES))} or path = "
            f"'file.npz' / 'folder', got {dict(spec)!r}"
        )
    if "path" in spec:
        path = user_path(spec["path"], "[data] path")
        with os_errors(path, "[data] path", DataError):
            return userdata.load(path)
    name = spec["name"]
    if name == "fashion-mnist":
        fm = sources.load(data_dir, download=download, progress=progress)
        arrays = (fm.train_images, fm.train_labels, fm.test_images, fm.test_labels)
        return build(name, *arrays, fashion_mnist.CLASS_NAMES, fm.digests, source=fm.source)
    if name in catalog.SOURCES:
        src = catalog.SOURCES[name]
        arrays, digests, folder = sources.load_idx(
            src, data_dir, download=download, progress=progress
        )
        x, y = arrays["train_images"], arrays["train_labels"].astype(np.int64)
        xt, yt = arrays["test_images"], arrays["test_labels"].astype(np.int64)
        return build(name, x, y, xt, yt, src.class_names, digests, source=folder)
    if name == "digits":
        return _digits(spec)
    raise UserError(f"[data] name must be one of {', '.join(DATA_NAMES)}, got name={name!r}")


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
    train_idx, test_idx = stratified_split(labels, n_test, seed)
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
