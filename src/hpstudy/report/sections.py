"""The report's sections, in reading order: each returns blocks (and writes its figures).

    >>> blocks = summary(view, final) + stage_section(view) + final_model_section(view, final, figs)

Every section reads a `RunView` (and, for the comparisons, the views of sibling runs); what a run
lacks (no final model yet, no grid to compare with) becomes a sentence, not a failure.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from hpstudy.config.config import Config
from hpstudy.config.factors import Range, config_text, factor_label, factor_title
from hpstudy.config.study import ProtocolKind
from hpstudy.report import figures, metrics, model_card, opening, sibling_tables
from hpstudy.report import report_tables as t
from hpstudy.report.loader import FinalModel, RunView, published_final, published_numbers
from hpstudy.report.render import Block, Code, Figure, Heading, Text

MAX_PANELS = 8  # curves of a grid or search: one panel per topology, or per depth beyond this


def title(view: RunView, final: FinalModel | None, related: list[RunView] = (),
          answer: list[Block] = ()) -> list[Block]:  # fmt: skip
    """The title, the answer (`answer`: a replication's headline, counts and forest plot), the
    run in one paragraph and the leak, explained once. Only a study that compares with the
    paper's published numbers names the paper."""
    study, counts = view.study, Counter(r.status.value for r in view.records)
    outcomes = Counter(r.outcome.value for r in view.finished if r.outcome)
    replicate = view.protocol is ProtocolKind.REPLICATE
    heading = opening.question_title(view) if replicate else _study_title(view)
    blocks: list[Block] = [Heading(1, heading, "top"), *answer]
    if not replicate and mentions_paper(view):
        blocks.append(Text(f"The paper: {opening.PAPER_CITATION}. "
                           f"{opening.paper_path_text(view)}", "note"))  # fmt: skip
    said = replicate or not study.description  # else the title holds the description
    blocks.append(Text(
        (f"{study.description} " if study.description and said else "")
        + f"Protocol `{view.protocol.value}`, selection on the {study.selection.value} split, "
        f"{study.n_seeds} seed(s) ({', '.join(map(str, study.seeds))}); "
        f"{counts.get('finished', 0)} finished trials ("
        + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
        + ")"
        + "".join(f", {n} {s}" for s, n in sorted(counts.items()) if s != "finished")
        + f". Run folder: `{view.run_dir}`."
    ))  # fmt: skip
    if view.is_leaky:
        blocks.append(Text(_leak_text(view, related), "warning"))
    if view.limits:
        limits = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in view.limits.items())
        blocks.append(Text(
            f"Quick try ({limits}): this run trained on a slice of the data or for fewer "
            "epochs, so its accuracies are not comparable with "
            + ("the paper's numbers." if mentions_paper(view) else "a full run's."),
            "warning"))  # fmt: skip
    if replicate:  # the verdict names the configuration to use and the final model, once
        return blocks
    lines = []
    winner = view.winner
    if winner is not None:
        lines.append(f"Final configuration: {_config(winner.config)}.")
    if final is not None:
        paper = published_final(view)
        vs = f" (the paper: {paper:.1f}%)" if paper is not None else ""
        lines.append(f"Its test accuracy: {t.pct(final.accuracy)}%{vs}.")
    lines += _reproduction_summary(view)
    if lines:
        blocks.append(Text(" ".join(lines), "note"))
    return blocks


def mentions_paper(view: RunView) -> bool:
    """Whether the report speaks of the paper: a replication, or a run beside its numbers."""
    return view.protocol is ProtocolKind.REPLICATE or bool(published_numbers(view))


def _study_title(view: RunView) -> str:
    """'Study grid: <its description>' or 'Study grid (grid protocol)'."""
    study = view.study
    about = study.description.rstrip(".") if study.description else f"{study.protocol.value} run"
    return f"Study {study.name}: {about}"


def _leak_text(view: RunView, related: list[RunView]) -> str:
    """The leak, explained once; its measured size where a clean run is beside this one."""
    text = ("The leak: this run selects on the test set, as the paper did. Early stopping and "
            "every choice read test accuracy, so each number is the best of a noisy curve on "
            "the very images it is scored on, and is optimistic.")  # fmt: skip
    gaps = [g for clean in related if not clean.is_leaky
            for g in metrics.leakage_gap(view, clean)
            if g.leaky.n and g.clean_test.n]  # fmt: skip
    if gaps:
        sizes = [100 * (g.leaky.mean - g.clean_test.mean) for g in gaps]
        text += (f" Its size, measured against a clean run beside this one on "
                 f"{len(gaps)} shared configuration(s): {min(sizes):+.2f} to {max(sizes):+.2f} "
                 "points (see the leakage gap).")  # fmt: skip
    else:
        text += (" To measure its size, run `hpstudy run clean` into the same parent folder: "
                 "it selects on a validation split and reads the test set once.")  # fmt: skip
    return text


def _config(c: Config) -> str:
    shape = c.topology_label
    if c.is_cnn:  # the dense label alone ('[2304-256-10]') would hide the convolutions
        per_block = f", {c.convs_per_block} per block" if c.convs_per_block > 1 else ""
        shape = f"convolutions {'-'.join(map(str, c.conv))}{per_block}, dense {shape}"
    return f"{shape}, {c.optimizer}, lr {c.lr:g}, {c.activation}"


def _reproduction_summary(view: RunView) -> list[str]:
    """Which of the paper's numbers this run reproduces within its 95% interval."""
    numbers = published_numbers(view)
    within, outside, single, other = [], [], 0, 0
    for table in view.tables:
        for row in table.rows:
            cmp = t.compare(row, numbers.get(table.name, {}).get(row.label))
            if cmp.paper is None:
                continue
            verdict = t.verdict(cmp.ours, cmp.paper)
            if not cmp.same_config:
                other += 1
            elif verdict == "yes":
                within.append(f"{row.label} ({table.name})")
            elif verdict.startswith("no"):
                outside.append(f"{row.label} ({table.name})")
            elif verdict:
                single += 1
    text = []
    if within or outside:
        text.append(
            f"Of the paper's numbers, {len(within)} lie within our 95% interval"
            + (f" ({', '.join(within)})" if within else "")
            + f" and {len(outside)} do not"
            + (f" ({', '.join(outside)})" if outside else "")
            + "."
        )
    if single:
        text.append(f"{single} of the paper's numbers meet a row with one seed, so no interval: "
                    "rerun with `--seeds 5` to test them.")  # fmt: skip
    if other:
        text.append(f"{other} rows (marked †) differ from the paper's configuration because "
                    "an earlier stage chose another winner.")  # fmt: skip
    return text


def stage_section(view: RunView) -> list[Block]:
    if not view.is_staged:
        if not view.tables:  # no empty section
            return []
        blocks: list[Block] = [Heading(2, "Best configurations")]
        blocks.append(t.best_configs(view, view.tables[0]))
        confirmed = [tb for tb in view.tables[1:] if tb.name == "confirmed"]
        if confirmed:  # search: the top configurations retrained on new seeds
            blocks.append(t.confirmation_table(view.tables[0], confirmed[0]))
        return blocks
    numbers = published_numbers(view)
    heading = "Tables I–IV" if numbers else "Stage tables"
    staged = [tb for tb in view.tables if tb.protocol == ProtocolKind.STAGED.value]
    if view.protocol is ProtocolKind.REPLICATE:
        heading = "Our staged search (the paper's method)"
    blocks = [Heading(2, heading, "stage-tables")]
    blocks.append(Text("One table per stage, in the paper's shape: each stage varies one "
                       "factor and carries its winner forward."))  # fmt: skip
    tables = [t.stage_table(view, table, numbers.get(table.name, {})) for table in staged]
    # One note block for the table kind: what every stage table shares is said once, after
    # them; a table keeps only the notes that are its own (its capped rows, its † rows).
    seen = Counter(note for table in tables for note in dict.fromkeys(table.notes))
    shared = [note for note in seen if seen[note] > 1]
    for table in tables:
        blocks.append(dataclasses.replace(table, notes=tuple(n for n in table.notes
                                                             if n not in shared)))  # fmt: skip
    if shared:
        blocks.append(Text(" ".join(shared), "note"))
    if view.study.staged_seeds and len(staged) < len(view.study.stages):
        blocks.append(
            Text(
                f"Only {len(view.tables)} of {len(view.study.stages)} stages have "
                "finished; rerun `hpstudy run` to complete the study.",
                "warning",
            )
        )
    return blocks


def final_model_section(view: RunView, final: FinalModel | None, figdir: Path,
                        replication=None) -> list[Block]:  # fmt: skip
    """The final model's card; `replication` (the verdict, if any) says which model it should
    be, and a file that is another one says so above the card."""
    blocks: list[Block] = [Heading(2, "The final model", "final-model-section")]
    if final is None:
        return [*blocks, Text("No final_best_model.pth in the run folder yet: it is written "
                              "when `hpstudy run` finishes the study.", "warning")]  # fmt: skip
    chosen = getattr(replication, "final_model", None)
    mismatch = chosen and final_model_mismatch(final.config, chosen.cell.config, chosen.seed)
    if mismatch:
        blocks.append(Text(f"{mismatch} It was saved by an earlier run of this study (under an "
                           f"older rule); `hpstudy run {view.study.name}` with the run's options "
                           "saves the verdict's model (nothing else is trained).",
                           "warning"))  # fmt: skip
    names = final.class_names
    cm = metrics.confusion_matrix(final.labels, final.predictions, len(names))
    paper = mentions_paper(view)
    blocks.append(
        model_card.final_model_table(final, view, published_final(view) if paper else None)
    )
    blocks.append(Figure(figures.plot_confusion_matrix(cm, names, figdir / "confusion_matrix.png"),
                         "Confusion matrix of the final model on the test split (rows: true "
                         "class, columns: predicted)" + (", as the paper's Fig. 1." if paper
                                                         else ".")))  # fmt: skip
    blocks.append(model_card.per_class_table(metrics.per_class(cm), names))
    blocks.append(model_card.confused_pairs_table(metrics.confused_pairs(cm), names))
    if final.images is not None:  # feature vectors have no picture
        path = figures.plot_misclassified(final.images, final.labels, final.predictions, names,
                                          figdir / "misclassified.png")  # fmt: skip
        blocks.append(Figure(path, "Misclassified test images (the first 24 in test-set "
                                   "order), with true and predicted class."))  # fmt: skip
    return blocks


def final_model_mismatch(saved: Config, chosen: Config, seed: int) -> str | None:
    """What differs between the model file's configuration and the verdict's final model (the
    chosen configuration at `seed`), as a sentence; None when they are the same."""
    if saved.replace(seed=seed) == chosen.replace(seed=seed) and saved.seed == seed:
        return None
    return (f"final_best_model.pth holds {config_text(saved)} at seed {saved.seed}, not the "
            f"verdict's final model, {config_text(chosen)} at seed {seed}.")  # fmt: skip


def curves_section(view: RunView, final: FinalModel | None, figdir: Path) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Curves and data")]
    by_number = view.by_number
    if view.is_staged:
        panels = {
            f"{tb.index}. {tb.name}": [
                (row.label, by_number[n]) for row in tb.rows for n in row.trial_numbers
            ]
            for tb in view.tables
        }
        caption = "Accuracy per epoch of every trial, one panel per table; ★ the winner"
    else:
        panels = {}
        finished = sorted(view.finished, key=lambda r: r.number)
        by_depth = len({r.config.topology for r in finished}) > MAX_PANELS  # a width range
        for r in finished:
            depth = len(r.config.topology)
            title = (f"{depth} hidden layer{'s' if depth > 1 else ''}" if by_depth
                     else factor_label("topology", r.config.topology))  # fmt: skip
            panels.setdefault(title, []).append((factor_label("optimizer", r.config.optimizer), r))
        caption = ("Accuracy per epoch of every trial, one panel per "
                   + ("number of hidden layers" if by_depth else "topology"))  # fmt: skip
    split = "test" if view.is_leaky else "validation"
    winners = {n for tb in view.tables if tb.winner for n in tb.winner.trial_numbers}
    path = figures.plot_curves(panels, figdir / "curves.png", max_epochs=view.study.max_epochs,
                               split=split, winners=winners)  # fmt: skip
    blocks.append(Figure(path, f"{caption} (on the {split} split); a dot marks the best epoch, a "
                               "cross where early stopping ended the trial."))  # fmt: skip
    balanced = final is not None and _balanced(final.train_labels, final.labels,
                                               len(final.class_names))  # fmt: skip
    if balanced:  # a flat bar chart carries no finding: one sentence says it
        blocks.append(
            Text(
                f"Classes are balanced: {balanced[0]:,} training and {balanced[1]:,} "
                f"test images in each of the {len(final.class_names)} classes."
            )
        )
    elif final is not None:
        path = figures.plot_class_distribution(final.train_labels, final.labels,
                                               figdir / "class_distribution.png",
                                               class_names=final.class_names,
                                               title=view.study.data_label)  # fmt: skip
        blocks.append(
            Figure(
                path,
                f"Images per class in this run's training split "
                f"({len(final.train_labels):,}) and test split "
                f"({len(final.labels):,}), as `hpstudy eda` draws it.",
            )
        )
    return blocks


def _balanced(train_labels, test_labels, n_classes: int) -> tuple[int, int] | None:
    """(training, test) images per class when every class has the same count, else None."""
    import numpy as np

    train = np.bincount(np.asarray(train_labels), minlength=n_classes)
    test = np.bincount(np.asarray(test_labels), minlength=n_classes)
    if len(set(train.tolist())) == 1 and len(set(test.tolist())) == 1:
        return int(train[0]), int(test[0])
    return None


def space_section(view: RunView, figdir: Path) -> list[Block]:
    """Grid and search runs: main effects, optimizer x lr heatmaps, fANOVA importances."""
    if view.is_staged:
        return []
    effects = metrics.main_effects(view)
    blocks: list[Block] = [Heading(2, "The whole space")]
    blocks.append(Figure(figures.plot_main_effects(effects, figdir / "main_effects.png"),
                         "Main effect of each factor: mean accuracy per level with its 95% "
                         "interval over configurations."))  # fmt: skip
    blocks.append(t.main_effects_table(effects))
    ranged = [factor_title(f).lower() for f, d in view.study.space.items() if isinstance(d, Range)]
    if ranged:
        blocks.append(Text(f"Searched as ranges: {', '.join(ranged)}. A range's levels are the "
                           f"values the search tried, one level each up to "
                           f"{metrics.MAX_LEVELS}, else {metrics.N_BINS} bins of equal count "
                           "(lowest-highest value in the bin).", "note"))  # fmt: skip
    pairs = metrics.interaction(view)
    if pairs is not None:
        path = figures.plot_interaction(pairs, figdir / "optimizer_lr.png")
        blocks.append(Figure(path, "Optimizer × learning rate, one heatmap per topology (mean "
                                   "accuracy over activations and seeds; blank: not "
                                   "tried)."))  # fmt: skip
    found = metrics.importances(view)
    blocks.append(t.importance_table(found))
    if found.values:
        path = figures.plot_importances(found.values, figdir / "importances.png", found.method)
        blocks.append(Figure(path, f"Parameter importances ({found.method})."))
    if view.protocol is ProtocolKind.SEARCH:
        blocks.append(Text("A search samples the space unevenly (TPE favours good regions), so "
                           "its main effects and heatmaps describe the trials it chose, not "
                           "the space uniformly.", "note"))  # fmt: skip
    return blocks


def comparison_section(view: RunView, related: list[RunView]) -> list[Block]:
    """Staged winners ranked in grids, and the leakage gap between paper and clean runs."""
    blocks: list[Block] = []
    runs = [view, *related]
    staged = [r for r in runs if r.is_staged and r.winner is not None]
    grids = [r for r in runs if r.protocol is ProtocolKind.GRID and r.tables]
    entries = [(s, g, metrics.rank_in(g.tables[0], s.winner.config, g.finished))
               for s in staged for g in grids if view in (s, g)]  # fmt: skip
    if entries:
        blocks += [Heading(2, "What the staged search missed"), sibling_tables.rank_table(entries)]
    pairs = [(a, b) for a in runs if a.is_leaky for b in runs
             if not b.is_leaky and view in (a, b)]  # fmt: skip
    for leaky, clean in pairs:
        rows = metrics.leakage_gap(leaky, clean)
        if rows:
            if not any(isinstance(b, Heading) and b.text == "The leakage gap" for b in blocks):
                blocks.append(Heading(2, "The leakage gap"))
            blocks.append(sibling_tables.leakage_table(rows, leaky, clean))
    return blocks  # nothing to compare with: no section (the run's own pages say the rest)


def provenance_section(view: RunView, final: FinalModel | None, report_command: str):
    from hpstudy.data import fashion_mnist

    info, split = view.info, view.split
    finished = view.finished
    distinct = lambda values: ", ".join(sorted({str(v) for v in values if v})) or "–"  # noqa: E731
    versions = {f"{k} {v}" for r in finished for k, v in r.versions.items()}
    if final is not None:
        versions.add(f"python {final.metadata.get('versions', {}).get('python', '?')}")
    digests = {name: d for r in finished for name, d in r.data_digests.items()}
    rows = [
        ("study file", f"{info.get('study_file', '')} (its text is below)"),
        ("started", info.get("started", "")),  # the commands: under "Reproduce and cost"
        ("versions", distinct(versions)),
        ("device", f"{info.get('device', '')}; trials: {distinct(r.device for r in finished)}"),
        ("dtype", distinct(r.dtype for r in finished)),
        ("seeds", ", ".join(map(str, view.study.seeds))),
        ("split", ", ".join(f"{k} {v}" for k, v in split.items())),
        ("quick-try limits", ", ".join(f"{k} {v}" for k, v in view.limits.items()) or "none"),
    ]
    for name, digest in sorted(digests.items()):
        if not view.study.is_fashion_mnist:  # verified on loading, or the user's own file
            rows.append((f"sha256 {name}", digest))
            continue
        ok = "canonical" if fashion_mnist.SHA256.get(name) == digest else "NOT the canonical file"
        rows.append((f"sha256 {name}", f"{digest} ({ok})"))
    blocks: list[Block] = [
        Heading(2, "Provenance"),
        t.key_value_table("provenance", "How this run was made", rows),
    ]
    blocks.append(t.cost_table(metrics.stage_costs(view)))
    blocks.append(
        Code(
            info.get("study_toml", ""),
            f"The study file as the run read it (`{info.get('study_file', '')}`)",
        )
    )
    return blocks
