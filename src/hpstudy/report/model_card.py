"""The final model's tables: configuration and test accuracy, per-class scores, confused pairs.

    >>> final = evaluate_final_model(view)
    >>> cm = metrics.confusion_matrix(final.labels, final.predictions)
    >>> final_model_table(final, view, 89.5); per_class_table(metrics.per_class(cm), names)
    >>> confused_pairs_table(metrics.confused_pairs(cm), names)

Tables as data (`hpstudy.report.report_tables.Table`); the renderers print them.
"""

from __future__ import annotations

from collections.abc import Sequence

from hpstudy.config.config import TRAINING_FIELDS, Config
from hpstudy.config.factors import FACTORS
from hpstudy.report.loader import FinalModel, RunView
from hpstudy.report.metrics import ClassScore, ConfusedPair
from hpstudy.report.report_tables import Table, pct, split_note


def final_model_table(final: FinalModel, view: RunView, paper_final: float | None) -> Table:
    config: Config = final.config
    metrics = final.metadata.get("metrics", {})
    stored = metrics.get("test_accuracy")
    rows = [
        ("data", f"{view.study.data_label} ({config.n_inputs} inputs, {config.n_classes} "
         "classes)"),
        *_architecture_rows(config),
        ("optimizer", f"{config.optimizer} (torch.optim defaults but for the settings listed)"),
        ("learning rate", f"{config.lr:g}"),
        ("activation", config.activation),
        *_training_rows(config),
        ("seed, batch, max epochs, patience",
         f"{config.seed}, {config.batch_size}, {config.max_epochs}, {config.patience}"),
        ("best epoch", f"{metrics.get('best_epoch', float('nan')):.0f}"),
        ("test accuracy (recomputed here)", f"{pct(final.accuracy)} % on {len(final.labels):,} "
         "test images"),
        ("test accuracy (stored in the model file)", f"{pct(stored)} %"),
    ]  # fmt: skip
    if paper_final is not None:  # only a study beside the paper's numbers names the paper
        rows.append(("paper's final test accuracy", f"{paper_final:.1f} %"))
    note = split_note(view)
    return Table(
        "final-model",
        "Configuration and test accuracy",
        ("", "value"),
        tuple(rows),
        (f"From {final.path.name}, evaluated on the run's test split.", note),
        data=(
            {
                "accuracy": final.accuracy,
                "stored_test_accuracy": stored,
                "config": config.to_dict(),
                "paper": paper_final,
            },
        ),
    )


def _architecture_rows(config: Config) -> list[tuple[str, str]]:
    """The topology row; for a CNN its convolution blocks, then its dense layers."""
    if not config.is_cnn:
        return [("topology", config.topology_label)]
    k = config.kernel_size
    norm = "BatchNorm2d, " if config.batch_norm else ""
    times = f"{config.convs_per_block} x (" if config.convs_per_block > 1 else ""
    return [
        ("convolutions", f"{', '.join(map(str, config.conv))} channels; per block {times}Conv2d "
         f"{k}x{k} (same padding), {norm}{config.activation}{')' if times else ''}, "
         "2x2 max-pooling"),
        ("dense layers", "-".join(map(str, config.dense_sizes))),
    ]  # fmt: skip


# Training settings beyond the paper's, shown when not at their defaults.
def _training_rows(config: Config) -> list[tuple[str, str]]:
    """'other training settings': e.g. 'wd 0.0001, cosine, dropout 0.3, aug flip_shift'."""
    default = Config()
    names = [n for n in TRAINING_FIELDS if getattr(config, n) != getattr(default, n)]
    if not names:
        return []
    return [("other training settings",
             ", ".join(FACTORS[n].tagged(getattr(config, n)) for n in names))]  # fmt: skip


def per_class_table(scores: Sequence[ClassScore], names: Sequence[str]) -> Table:
    rows = tuple(
        (names[s.index], pct(s.precision), pct(s.recall), pct(s.f1), str(s.support)) for s in scores
    )
    worst = min(range(len(scores)), key=lambda i: (scores[i].f1, i)) if scores else None
    return Table(
        "per-class",
        "Per-class precision, recall and F1",
        ("class", "precision (%)", "recall (%)", "F1 (%)", "test images"),
        rows,
        ("The highlighted row is the class with the lowest F1.",),
        () if worst is None else (worst,),
        tuple(vars(s) for s in scores),
    )


def confused_pairs_table(pairs: Sequence[ConfusedPair], names: Sequence[str]) -> Table:
    rows = tuple(
        (f"{names[p.a]} ↔ {names[p.b]}", str(p.a_as_b), str(p.b_as_a), str(p.total)) for p in pairs
    )
    return Table(
        "confused-pairs",
        "Most confused class pairs",
        ("pair (a ↔ b)", "a predicted as b", "b predicted as a", "total"),
        rows,
        ("Counts of test images, from the confusion matrix.",),
        data=tuple(vars(p) for p in pairs),
    )
