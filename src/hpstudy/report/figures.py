"""The report's figures as PNG files (matplotlib's Agg renderer on bare Figures, seaborn heatmaps).

    >>> plot_confusion_matrix(cm, CLASS_NAMES, Path("figures/confusion_matrix.png"))
    >>> plot_curves({"1. topology": records, ...}, Path("figures/curves.png"), max_epochs=20)
    >>> plot_main_effects(effects, Path("figures/main_effects.png"))

Each function takes plain data, draws one figure and writes it atomically (a temporary name, then
a rename), so a report never points at half a PNG. No pyplot: nothing here touches global
matplotlib state, and the figures render the same with or without a display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpstudy.storage import TrialRecord
from hpstudy.storage.atomic import atomic_file

DPI = 100  # figure sizes are in inches at this density: what the page shows at 1x
SCALE = 2  # PNGs are drawn at 2x that density for sharp text; the HTML shows them at 1x
_MARK_BEST = dict(marker="o", markersize=5, linestyle="none")
_MARK_STOP = dict(marker="x", markersize=7, markeredgewidth=2, linestyle="none")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_atomic(fig, path: Path) -> Path:
    """Write `fig` as a PNG at `path` through a temporary file in the same folder."""
    with atomic_file(path) as fh:
        fig.savefig(fh, format="png", dpi=DPI * SCALE)
    return Path(path)


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """The paper's Fig. 1: counts per (true, predicted) class as an annotated seaborn heatmap."""
    import seaborn as sns

    fig = _figure(9, 7.5)
    ax = fig.add_subplot()
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", square=True, ax=ax, cbar=True,
                xticklabels=class_names, yticklabels=class_names, annot_kws={"size": 8},
                linewidths=0.5, linecolor="white")  # fmt: skip
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(axis="x", labelrotation=35)
    ax.tick_params(axis="y", labelrotation=0)
    accuracy = np.trace(cm) / cm.sum() if cm.sum() else math.nan
    ax.set_title(f"Confusion matrix of the final model ({100 * accuracy:.2f}% of {cm.sum():,})")
    return save_atomic(fig, path)


def plot_misclassified(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    *,
    n: int = 24,
    columns: int = 8,
) -> Path:
    """The first `n` misclassified test images (test-set order) with true and predicted class."""
    wrong = np.flatnonzero(labels != predictions)[:n]
    n_rows = max(1, math.ceil(len(wrong) / columns))
    fig = _figure(columns * 1.45, n_rows * 1.75)
    for i in range(n_rows * columns):
        ax = fig.add_subplot(n_rows, columns, i + 1)
        ax.set_axis_off()
        if i < len(wrong):
            k = wrong[i]
            ax.imshow(images[k], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(f"#{k}\ntrue: {class_names[labels[k]]}\npred: "
                         f"{class_names[predictions[k]]}", fontsize=8)  # fmt: skip
    if not len(wrong):
        fig.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    return save_atomic(fig, path)


def plot_curves(
    panels: dict[str, Sequence[tuple[str, TrialRecord]]],
    path: Path,
    *,
    max_epochs: int,
    split: str = "evaluation",
    winners: frozenset[int] | set[int] = frozenset(),
) -> Path:
    """Accuracy per epoch for every trial, one panel per stage (or group).

    `panels`: title -> [(label, record)]; trials of one configuration (its seeds) share a legend
    entry, and one configuration keeps its colour in every panel. `winners`: trial numbers
    drawn bold and starred. A dot marks each trial's best epoch; a cross marks where early
    stopping ended a trial (its last epoch, if before `max_epochs`). `split` names the axis.
    """
    from matplotlib.ticker import MaxNLocator

    n = max(1, len(panels))
    columns = 2 if n > 1 else 1
    n_rows = math.ceil(n / columns)
    fig = _figure(6.5 * columns, 4.2 * n_rows)
    colors: dict[tuple, str] = {}  # configuration (without seed) -> colour, across panels
    for i, (title, trials) in enumerate(panels.items()):
        ax = fig.add_subplot(n_rows, columns, i + 1)
        for name, r in trials:
            if not r.eval_accuracy:
                continue
            config = r.config.replace(seed=0)
            color = colors.setdefault(config, f"C{len(colors) % 10}")
            won = r.number in winners
            epochs = np.arange(1, len(r.eval_accuracy) + 1)
            acc = 100 * np.asarray(r.eval_accuracy, dtype=float)
            ax.plot(epochs, acc, color=color, linewidth=2.8 if won else 1.3,
                    alpha=1.0 if won else 0.8, label=f"★ {name}" if won else name)  # fmt: skip
            if r.best_epoch:
                ax.plot(r.best_epoch, acc[r.best_epoch - 1], color=color, **_MARK_BEST)
            if len(epochs) < max_epochs:
                ax.plot(epochs[-1], acc[-1], color=color, **_MARK_STOP)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{split} accuracy (%)")
        ax.set_xlim(0.5, max_epochs + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles, strict=True))  # one entry per configuration
        if unique and len(unique) <= 12:
            ax.legend(unique.values(), unique.keys(), fontsize=9, loc="lower right")
    fig.suptitle(f"{split.capitalize()} accuracy per epoch  (★ stage winner, ● best epoch, "
                 "✕ stopped early)")  # fmt: skip
    return save_atomic(fig, path)


def plot_main_effects(effects: dict[str, list[tuple[str, object]]], path: Path) -> Path:
    """Mean accuracy per level of each factor, with its 95% interval, one panel per factor."""
    from hpstudy.config.factors import factor_title

    fig = _figure(4 * len(effects), 3.6)
    for i, (factor, levels) in enumerate(effects.items()):
        ax = fig.add_subplot(1, len(effects), i + 1)
        x = np.arange(len(levels))
        means = np.array([100 * c.mean if c.n else np.nan for _, c in levels])
        errors = np.array([100 * c.half95 if c.n > 1 else 0.0 for _, c in levels])
        ax.errorbar(x, means, yerr=errors, fmt="o-", capsize=4)
        ax.set_xticks(x, [label for label, _ in levels], rotation=30, ha="right")
        ax.set_title(factor_title(factor))
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_ylabel("mean accuracy (%)")
    return save_atomic(fig, path)


def plot_interaction(interaction, path: Path) -> Path:
    """One optimizer x learning-rate heatmap per topology, on a shared colour scale."""
    import seaborn as sns

    cells = interaction.cells
    values = np.concatenate([m.ravel() for m in cells.values()]) if cells else np.array([])
    finite = values[np.isfinite(values)]
    vmin, vmax = (100 * finite.min(), 100 * finite.max()) if finite.size else (0, 100)
    n = max(1, len(cells))
    columns = min(3, n)
    n_rows = math.ceil(n / columns)
    fig = _figure(4.6 * columns, 2.6 * n_rows + 0.4)
    for i, (topology, matrix) in enumerate(cells.items()):
        ax = fig.add_subplot(n_rows, columns, i + 1)
        sns.heatmap(100 * matrix, annot=True, fmt=".1f", cmap="viridis", vmin=vmin, vmax=vmax,
                    mask=~np.isfinite(matrix), ax=ax, cbar=i == len(cells) - 1,
                    xticklabels=interaction.lrs, yticklabels=interaction.optimizers,
                    annot_kws={"size": 8})  # fmt: skip
        ax.set_title(topology)
        ax.set_xlabel("learning rate")
        ax.tick_params(axis="y", labelrotation=0)
    fig.suptitle("Mean accuracy (%) by optimizer and learning rate (mean over activations)")
    return save_atomic(fig, path)


def plot_importances(values: dict[str, float], path: Path, method: str = "fANOVA") -> Path:
    from hpstudy.config.factors import factor_title

    fig = _figure(6, 0.5 * max(1, len(values)) + 1.2)
    ax = fig.add_subplot()
    names = [factor_title(k) for k in values][::-1]
    ax.barh(names, list(values.values())[::-1], color="C0")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"{method} importance (share of variance)")
    for y, v in enumerate(list(values.values())[::-1]):
        ax.text(v + 0.01, y, f"{v:.3f}", va="center", fontsize=9)
    return save_atomic(fig, path)


def plot_class_distribution(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    path: Path,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "FashionMNIST",
) -> Path:
    """Examples per class in the run's training and test splits (`hpstudy eda`'s plot)."""
    from hpstudy.data import eda
    from hpstudy.data import idx as data

    names = tuple(class_names or data.CLASS_NAMES)
    return eda.plot_class_distribution(eda.class_counts(train_labels, len(names)),
                                       eda.class_counts(test_labels, len(names)), path,
                                       class_names=names, title=title)  # fmt: skip
