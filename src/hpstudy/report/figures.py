"""The report's figures as PNG files (matplotlib's Agg renderer on bare Figures, seaborn heatmaps).

    >>> plot_confusion_matrix(cm, CLASS_NAMES, Path("figures/confusion_matrix.png"))
    >>> plot_curves({"1. topology": records, ...}, Path("figures/curves.png"), max_epochs=20)
    >>> plot_main_effects(effects, Path("figures/main_effects.png"))

Each function takes plain data, draws one figure and writes it atomically (a temporary name, then
a rename), so a report never points at half a PNG. No pyplot: nothing here touches global
matplotlib state, and the figures render the same with or without a display. Text that comes from
the user (class names, stage titles, factor levels, configuration labels) goes through
`hpstudy.usertext.plot_text`: matplotlib draws it as it is, never as mathtext.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpstudy.atomic import atomic_file
from hpstudy.storage import TrialRecord
from hpstudy.usertext import plot_text

DPI = 100  # figure sizes are in inches at this density: what the page shows at 1x
SCALE = 2  # PNGs are drawn at 2x that density for sharp text; the HTML shows them at 1x
# One colour per level of each of the paper's factors, the same in every figure: the i-th level
# of a factor takes matplotlib's i-th colour (C0-C4); other labels take C5-C9.
LEVEL_COLOURS = {
    label: f"C{i}"
    for levels in (("T1", "T2", "T3", "T4", "T5"), ("SGD", "Adam", "RMSprop"),
                   ("0.001", "0.005", "0.01", "0.05", "0.1"),
                   ("ReLU", "Sigmoid", "Tanh", "LeakyReLU", "ELU"))
    for i, label in enumerate(levels)
}  # fmt: skip
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
    class_names = [plot_text(name) for name in class_names]
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
    class_names = [plot_text(name) for name in class_names]
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
    entry. A level of one of the paper's factors ('T4', 'Adam', '0.005', 'ReLU') has one colour
    in every panel and figure (`LEVEL_COLOURS`); other labels keep one colour per configuration.
    `winners`: trial numbers drawn bold and starred. A dot marks each trial's best epoch; a
    cross marks where early stopping ended a trial (its last epoch, if before `max_epochs`).
    `split` names the axis.
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
            color = LEVEL_COLOURS.get(name) or colors.setdefault(config, f"C{5 + len(colors) % 5}")
            won = r.number in winners
            epochs = np.arange(1, len(r.eval_accuracy) + 1)
            acc = 100 * np.asarray(r.eval_accuracy, dtype=float)
            ax.plot(epochs, acc, color=color, linewidth=2.8 if won else 1.3,
                    alpha=1.0 if won else 0.8,
                    label=plot_text(f"★ {name}" if won else name))  # fmt: skip
            if r.best_epoch:
                ax.plot(r.best_epoch, acc[r.best_epoch - 1], color=color, **_MARK_BEST)
            if len(epochs) < max_epochs:
                ax.plot(epochs[-1], acc[-1], color=color, **_MARK_STOP)
        ax.set_title(plot_text(title))
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
        ax.set_xticks(x, [plot_text(label) for label, _ in levels], rotation=30, ha="right")
        ax.set_title(plot_text(factor_title(factor)))
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
                    xticklabels=[plot_text(v) for v in interaction.lrs],
                    yticklabels=[plot_text(v) for v in interaction.optimizers],
                    annot_kws={"size": 8})  # fmt: skip
        ax.set_title(plot_text(topology))
        ax.set_xlabel("learning rate")
        ax.tick_params(axis="y", labelrotation=0)
    fig.suptitle("Mean accuracy (%) by optimizer and learning rate (mean over activations)")
    return save_atomic(fig, path)


def plot_importances(values: dict[str, float], path: Path, method: str = "fANOVA") -> Path:
    from hpstudy.config.factors import factor_title

    fig = _figure(6, 0.5 * max(1, len(values)) + 1.2)
    ax = fig.add_subplot()
    names = [plot_text(factor_title(k)) for k in values][::-1]
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
    from hpstudy.data import eda, fashion_mnist

    names = tuple(class_names or fashion_mnist.CLASS_NAMES)
    return eda.plot_class_distribution(eda.class_counts(train_labels, len(names)),
                                       eda.class_counts(test_labels, len(names)), path,
                                       class_names=names, title=title)  # fmt: skip


# Okabe & Ito's colour-blind-safe palette: one colour per verdict, the same in every figure.
VERDICT_COLOURS = {
    "consistent": "#009E73",  # bluish green
    "above": "#D55E00",  # vermillion: the paper reports more than one run of ours gives
    "below": "#0072B2",  # blue
    "diverged": "#7f7f7f",  # grey: no accuracy to estimate
    "supported": "#009E73",
    "partly supported": "#56B4E9",  # sky blue
    "contradicted": "#D55E00",
    "inconclusive": "#7f7f7f",
}
OFF_SCALE_PP = 15  # points: a row whose median seed lies this far below every published number
FONT_PT = 10  # at DPI 100 a point is 100/72 px: 10 pt is 13.9 px at 1x, above the 12 px floor


def plot_forest(cells: Sequence[dict], comparisons: Sequence[dict], path: Path) -> Path:
    """The verdict in one picture: every configuration against the paper's number(s).

    `cells`: one dict per configuration, in table order, with `group` ("Table I"), `label`,
    `accuracies` (% per seed), `ci95` and optional `prediction95` ([low, high] in %), `papers`
    ([(published %, verdict)]) and `verdict` (the row's colour); `diverged` rows are drawn as a
    band at the axis' left edge with their seeds' range written out, since an average of diverged
    seeds estimates nothing; so is a row whose seeds sit far below every published number
    (`OFF_SCALE_PP`), so that it does not squeeze the others. `comparisons`: the claims' paired
    differences, dicts with `label`, `estimate`, `ci95` (points) and `verdict` (the claim's),
    drawn in a second panel around 0.
    """
    from matplotlib.lines import Line2D

    slots: list[tuple[str, dict | None]] = []  # (text, cell); None: a group heading
    group = None
    for cell in cells:
        if cell["group"] != group:
            group = cell["group"]
            slots.append((group, None))
        slots.append((cell["label"], cell))
    n_left, n_right = len(slots), len(comparisons)
    height = 0.27 * max(n_left, n_right + 2) + 1.4
    fig = _figure(11, height)
    grid = fig.add_gridspec(1, 2, width_ratios=(1.75, 1) if comparisons else (1, 0.001))
    ax = fig.add_subplot(grid[0, 0])
    papers = [p for c in cells for p, _ in c["papers"]]
    # A row whose seeds sit far below every published number (say Adam at lr 0.05, seeds at
    # 19-49%) would squeeze the others into a sliver: it is written out, not drawn to scale.
    floor = min(papers) - OFF_SCALE_PP if papers else -math.inf
    off = {id(c) for c in cells if not c.get("diverged") and _median(c["accuracies"]) < floor}
    live = [c for c in cells if not c.get("diverged") and id(c) not in off]
    values = [x for c in live for x in (*c["accuracies"], *_pair(c.get("prediction95")))]
    values = [x for x in (*values, *papers) if x is not None and math.isfinite(x)]
    low, high = (min(values), max(values)) if values else (0.0, 100.0)
    pad = max(0.4, 0.06 * (high - low))
    left = low - pad
    for y, (_, cell) in enumerate(slots):
        if cell is None:
            continue
        colour = VERDICT_COLOURS.get(cell["verdict"], "#444444")
        if cell.get("diverged") or id(cell) in off:
            seeds = [a for a in cell["accuracies"] if a is not None and math.isfinite(a)]
            span = ("no accuracy" if not seeds else f"{min(seeds):.0f}%"
                    if f"{min(seeds):.0f}" == f"{max(seeds):.0f}"
                    else f"{min(seeds):.0f}–{max(seeds):.0f}%")  # fmt: skip
            what = "diverged" if cell.get("diverged") else "off the scale"
            ax.axhspan(y - 0.38, y + 0.38, color=colour, alpha=0.15, linewidth=0)
            ax.text(left + 0.1 * pad, y, f"{what}: seeds at {span}", va="center",
                    fontsize=FONT_PT, color="#333333", style="italic")  # fmt: skip
            for p, v in cell["papers"]:
                ax.plot(p, y, **_paper_marker(v))
            continue
        pi = _pair(cell.get("prediction95"))
        if None not in pi:
            ax.plot(pi, (y, y), color=colour, alpha=0.28, linewidth=9, solid_capstyle="butt")
        ci = _pair(cell.get("ci95"))
        if None not in ci:
            ax.plot(ci, (y, y), color=colour, linewidth=2.4, solid_capstyle="butt")
        seeds = [a for a in cell["accuracies"] if a is not None]
        ax.plot(seeds, [y] * len(seeds), "o", markersize=4.5, markerfacecolor="white",
                markeredgecolor=colour, markeredgewidth=1.3)  # fmt: skip
        for p, v in cell["papers"]:
            ax.plot(p, y, **_paper_marker(v))
    ax.set_yticks(range(n_left), [t for t, _ in slots])
    for tick, (_, cell) in zip(ax.get_yticklabels(), slots, strict=True):
        tick.set_fontweight("bold" if cell is None else "normal")
    ax.set_ylim(n_left - 0.5, -0.6)
    ax.set_xlim(left, high + pad)
    ax.set_xlabel("test accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(labelsize=FONT_PT)
    ax.xaxis.label.set_size(FONT_PT)
    handles = [
        Line2D([], [], color="#555555", alpha=0.28, linewidth=9,
               label="95% prediction interval, one run"),
        Line2D([], [], color="#555555", linewidth=2.4, label="95% t-interval of the mean"),
        Line2D([], [], marker="o", linestyle="none", markerfacecolor="white",
               markeredgecolor="#555555", label="our seeds"),
        Line2D([], [], **_paper_marker(None), label="the paper's number"),
        *(Line2D([], [], color=VERDICT_COLOURS[k], linewidth=5, label=k)
          for k in ("consistent", "above", "below", "diverged")),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="outside upper center", ncol=4, fontsize=FONT_PT,
               frameon=False)  # fmt: skip
    if comparisons:
        ax2 = fig.add_subplot(grid[0, 1])
        for y, comp in enumerate(comparisons):
            colour = VERDICT_COLOURS.get(comp["verdict"], "#444444")
            ci = _pair(comp.get("ci95"))
            if None not in ci:
                ax2.plot(ci, (y, y), color=colour, linewidth=2.4, solid_capstyle="butt")
            if comp.get("estimate") is not None:
                ax2.plot(comp["estimate"], y, "o", color=colour, markersize=6)
        ax2.axvline(0, color="#222222", linewidth=1)
        ax2.set_yticks(range(n_right), [c["label"] for c in comparisons])
        ax2.yaxis.tick_right()
        ax2.set_ylim(max(n_right, n_left) - 0.5, -0.6)
        ax2.set_xlabel("claimed minus alternative (pp)")
        ax2.set_title("The claims: paired differences", fontsize=FONT_PT)
        ax2.grid(axis="x", alpha=0.3)
        ax2.tick_params(labelsize=FONT_PT)
        ax2.xaxis.label.set_size(FONT_PT)
    return save_atomic(fig, path)


def _median(values) -> float:
    kept = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.median(kept)) if kept else -math.inf


def _pair(values) -> tuple:
    if not values or len(values) != 2:
        return (None, None)
    low, high = values
    ok = all(x is not None and math.isfinite(x) for x in (low, high))
    return (low, high) if ok else (None, None)


def _paper_marker(verdict: str | None) -> dict:
    """The paper's number: a black-edged diamond filled with its verdict's colour."""
    return dict(marker="D", markersize=7.5, linestyle="none", markeredgecolor="black",
                markeredgewidth=1.2,
                markerfacecolor=VERDICT_COLOURS.get(verdict or "", "white"))  # fmt: skip
