"""Exploratory analysis of a dataset (FashionMNIST by default): class balance, pixel
statistics and sample images.

    >>> from pathlib import Path
    >>> from hpstudy.data import eda, sources
    >>> ds = sources.load()
    >>> summary = eda.summarize(ds)
    >>> summary.train_counts.tolist()[:3], round(summary.pixel_mean, 4)
    ([6000, 6000, 6000], 0.286)
    >>> eda.plot_class_distribution(summary.train_counts, summary.test_counts, Path("dist.png"))
    PosixPath('dist.png')

No printing here: the functions return values and write figures; `hpstudy eda` prints. Figures
are drawn on a bare `matplotlib.figure.Figure` (the Agg renderer, no pyplot), so importing this
module changes no global matplotlib state, and are written to a temporary name and renamed.
Class names and the title (a data file's name) are user text: they reach matplotlib through
`hpstudy.usertext.plot_text`, as plain text, never as mathtext.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpstudy.atomic import atomic_file
from hpstudy.data import fashion_mnist
from hpstudy.errors import UserError
from hpstudy.usertext import plot_text

CLASS_DISTRIBUTION_PNG = "eda_class_distribution.png"
SAMPLES_PNG = "eda_samples.png"
_DPI = 100
# Pixel sizes follow from inches x dpi, and no tight bbox, so every run writes the same size.
_CLASS_DISTRIBUTION_INCHES = (10.0, 5.0)  # 1000 x 500 px
_SAMPLE_CELL_INCHES = 0.8  # one image; the grid adds a column of class names on the left
_NAME_COLUMN_INCHES = 1.2


@dataclass(frozen=True)
class EdaSummary:
    """What `hpstudy eda` reports about the dataset."""

    class_names: tuple[str, ...]
    train_counts: np.ndarray  # (K,) examples per class in the training set
    test_counts: np.ndarray  # (K,) examples per class in the test set
    pixel_mean: float  # training pixels on [0, 1] (float features: their raw values)
    pixel_std: float  # population std (ddof=0) of the same


@dataclass(frozen=True)
class EdaResult:
    summary: EdaSummary
    figures: tuple[Path, ...]  # the files written, in the order written


def class_counts(labels: np.ndarray, n_classes: int = len(fashion_mnist.CLASS_NAMES)) -> np.ndarray:
    """Images per class, (n_classes,) int64."""
    return np.bincount(labels, minlength=n_classes).astype(np.int64)


def pixel_stats(images: np.ndarray) -> tuple[float, float]:
    """(mean, std) of uint8 images scaled to [0, 1], exact in float64.

    A 256-bin histogram gives both without a float copy of the 47 M pixels.
    """
    hist = np.bincount(images.reshape(-1), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = hist.sum()
    mean = float(hist @ values / n)
    std = float(np.sqrt(hist @ (values - mean) ** 2 / n))
    return mean, std


def _arrays(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(x_train, y_train, y_test, class names) of a `Dataset` or a `FashionMNIST`."""
    if hasattr(ds, "x_train"):
        return ds.x_train, ds.y_train, ds.y_test, tuple(ds.class_names)
    return ds.train_images, ds.train_labels, ds.test_labels, fashion_mnist.CLASS_NAMES


def summarize(ds) -> EdaSummary:
    """Class balance and value statistics of a `datasets.Dataset` (or `fashion_mnist.FashionMNIST`):
    pixels on [0, 1] for uint8 images, the raw values for float features."""
    x, y, y_test, names = _arrays(ds)
    if x.dtype == np.uint8:
        mean, std = pixel_stats(x)
    else:
        mean, std = float(x.mean(dtype=np.float64)), float(x.std(dtype=np.float64))
    return EdaSummary(
        class_names=names,
        train_counts=class_counts(y, len(names)),
        test_counts=class_counts(y_test, len(names)),
        pixel_mean=mean,
        pixel_std=std,
    )


def plot_class_distribution(
    train_counts: Sequence[int] | np.ndarray,
    test_counts: Sequence[int] | np.ndarray,
    path: Path,
    *,
    class_names: Sequence[str] = fashion_mnist.CLASS_NAMES,
    title: str = "FashionMNIST",
) -> Path:
    """Bars per class, train and test side by side, written atomically as a PNG at `path`."""
    from matplotlib.figure import Figure

    train, test = np.asarray(train_counts), np.asarray(test_counts)
    if not len(train) == len(test) == len(class_names):
        raise UserError(
            f"need one count per class: got {len(train)} train counts, {len(test)} test counts "
            f"and {len(class_names)} class names"
        )
    fig = Figure(figsize=_CLASS_DISTRIBUTION_INCHES, dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(class_names))
    width = 0.4
    for offset, counts, label in ((-width / 2, train, "train"), (width / 2, test, "test")):
        bars = ax.bar(x + offset, counts, width, label=f"{label} ({int(counts.sum()):,})")
        ax.bar_label(bars, labels=[f"{int(c):,}" for c in counts], fontsize=7, padding=2)
    ax.set_xticks(x, [plot_text(name) for name in class_names], rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.set_ylim(0, max(int(train.max()), int(test.max())) * 1.12)  # room for the bar labels
    ax.set_title(plot_text(f"{title}: images per class"))
    # A fixed place: "best" searches the bars, and warns when a busy machine makes that slow.
    fig.legend(loc="outside upper right", ncol=2)
    return _save_atomic(fig, path)


def plot_samples(
    images: np.ndarray,
    labels: np.ndarray,
    path: Path,
    *,
    n_per_class: int = 10,
    seed: int = 0,
    class_names: Sequence[str] = fashion_mnist.CLASS_NAMES,
) -> Path:
    """A grid with one row per class of `n_per_class` images drawn with `seed`, as a PNG."""
    from matplotlib.figure import Figure

    if n_per_class < 1:
        raise UserError(f"need at least one sample per class, got n_per_class={n_per_class}")
    rng = np.random.default_rng(seed)
    n_classes = len(class_names)
    width = _NAME_COLUMN_INCHES + n_per_class * _SAMPLE_CELL_INCHES
    fig = Figure(figsize=(width, n_classes * _SAMPLE_CELL_INCHES), dpi=_DPI)
    left = _NAME_COLUMN_INCHES / width
    grid = fig.add_gridspec(n_classes, n_per_class, left=left, right=1, bottom=0, top=1)
    for row, name in enumerate(class_names):
        members = np.flatnonzero(labels == row)
        if len(members) < n_per_class:
            raise UserError(
                f"class {row} ({name}) has {len(members)} images, fewer than "
                f"n_per_class={n_per_class}"
            )
        chosen = np.sort(rng.choice(members, size=n_per_class, replace=False))
        for col, index in enumerate(chosen):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(images[index], cmap="gray_r", vmin=0, vmax=max(16, int(images.max())),
                      interpolation="nearest")  # fmt: skip
            ax.set_axis_off()
        # The class name sits in the left margin, vertically centred on its row.
        fig.text(left - 0.01, 1 - (row + 0.5) / n_classes, plot_text(name), ha="right",
                 va="center")  # fmt: skip
    return _save_atomic(fig, path)


def ensure_out_dir(out: Path) -> Path:
    """`out` as a folder that exists (parents created), or a UserError saying why not."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the EDA figures")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create --out {out}: {exc.strerror}; choose another folder"
        ) from exc
    return out


def run_eda(ds, out: Path, *, seed: int = 0, title: str = "FashionMNIST") -> EdaResult:
    """Summarize `ds` (a `datasets.Dataset` or `fashion_mnist.FashionMNIST`) and write its figures
    into `out` (created if missing): the sample grid only for images, with at most as many per class
    as the smallest class holds (up to 10)."""
    out = ensure_out_dir(out)
    summary = summarize(ds)
    x, y, _, names = _arrays(ds)
    figures = [
        plot_class_distribution(
            summary.train_counts, summary.test_counts, out / CLASS_DISTRIBUTION_PNG,
            class_names=names, title=title,
        ),
    ]  # fmt: skip
    if x.ndim == 3:
        n_per_class = min(10, int(summary.train_counts.min()))
        figures.append(plot_samples(x, y, out / SAMPLES_PNG, seed=seed, class_names=names,
                                    n_per_class=n_per_class))  # fmt: skip
    return EdaResult(summary=summary, figures=tuple(figures))


def _save_atomic(fig, path: Path) -> Path:
    """Save `fig` as PNG to a temporary name beside `path`, then rename it to `path`."""
    path = Path(path)
    try:
        with atomic_file(path) as fh:
            fig.savefig(fh, format="png", dpi=_DPI)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}; choose another --out") from exc
    return path
