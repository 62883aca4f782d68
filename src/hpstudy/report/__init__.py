"""The report: a run's store and saved model turned into report.html, report.md and report.json.

    >>> from hpstudy.report import build_report
    >>> paths = build_report("runs/paper")              # compares with sibling runs it finds
    >>> paths.html, paths.markdown, paths.json, paths.figures
    >>> build_report("runs/paper", compare=["runs/clean", "runs/grid"])   # or name them
    >>> build_report("runs/paper", compare_siblings=False)                # or compare with none

A replication's page opens with its question ("Does '<paper title>' hold?"), the headline
sentence, the counts and a forest plot (`hpstudy.report.answer`), then the verdict. Beside the
report, seeds.csv holds every seed of every cell (every trial, for other protocols).

What it shows: the paper's Tables I-IV (ours as mean ± 95% CI over seeds, the paper's number, the
difference, the winner, the selection rule and split), the final model (configuration, test
accuracy, confusion matrix, per-class precision/recall/F1, most confused pairs, misclassified
images), accuracy curves per stage, the class distribution; for grid and search runs the best
configurations, main effects, optimizer x learning-rate heatmaps and fANOVA importances; where a
staged winner ranks in a grid run, the leakage gap between paper and clean runs; provenance.

Every number is recomputed from the trial records (`hpstudy.report.loader`), never copied from
the tables `hpstudy run` printed. Figures go to `RUN_DIR/figures/`; report.md links them there,
report.html embeds them. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from hpstudy.report.loader import RunView, evaluate_final_model, find_related, load_run

SCHEMA_VERSION = 1
FIGURES_DIR = "figures"
SEEDS_CSV = "seeds.csv"  # every seed of every cell (or trial), beside the report

__all__ = ["ReportPaths", "RunView", "build_report", "find_related", "load_run"]


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    json: Path
    figures: tuple[Path, ...]
    related: tuple[Path, ...]  # sibling runs the comparisons used


def build_report(
    run_dir: str | Path,
    *,
    compare: list[str | Path] | tuple = (),
    compare_siblings: bool = True,
    data_dir: str | None = None,
    command: str | None = None,
    storage: str | None = None,
    data=None,
) -> ReportPaths:
    """Write report.html, report.md, report.json and figures/*.png into the run folder.

    `compare`: other run folders for the comparisons (default: the run's siblings on the same
    data, with the same budget and a protocol to compare with; none if `compare_siblings` is
    False).
    `command`: the command line to record under provenance (the CLI passes its own).
    `storage`: a storage URL that overrides the run's run.json (which keeps no password).
    `data`: the data the run just trained on (`RunSummary.data`), so that a report written right
    after a run does not load and hash the dataset again; None: rebuilt as run.json says.
    """
    from hpstudy.report import answer, method, opening, sections
    from hpstudy.report.render import Figure, Heading, to_html, to_markdown, write_text_atomic
    from hpstudy.report.report_tables import Table

    view = load_run(run_dir, storage)
    related = find_related(view, compare) if compare or compare_siblings else []
    final = evaluate_final_model(view, data_dir, data)
    figdir = view.run_dir / FIGURES_DIR
    figdir.mkdir(exist_ok=True)
    command = command or "hpstudy.report.build_report (from Python)"
    replication = opening.replication_of(view)  # computed once: the page and the json
    replication_data = replication.to_dict() if replication is not None else None
    _write_seeds_csv(view, replication_data, view.run_dir / SEEDS_CSV)
    lead = answer.headline_section(replication, figdir)  # the headline and the forest plot
    blocks = [
        *sections.title(view, final, related, lead),
        *opening.verdict_section(replication, view.study.seeds),
        *opening.noise_section(view),
        *sections.stage_section(view),
        *sections.final_model_section(view, final, figdir, replication),
        *sections.curves_section(view, final, figdir),
        *sections.space_section(view, figdir),
        *sections.comparison_section(view, related),
        *method.method_section(view),
        *method.reproduce_section(view, command, replication_data, SEEDS_CSV),
        *sections.provenance_section(view, final, command),
    ]
    title = next(b.text for b in blocks if isinstance(b, Heading) and b.level == 1)
    html = write_text_atomic(view.run_dir / "report.html", to_html(blocks, title=title))
    md = write_text_atomic(
        view.run_dir / "report.md", to_markdown(blocks, relative_to=view.run_dir)
    )
    tables = [b for b in blocks if isinstance(b, Table)]
    figure_paths = tuple(Path(b.path) for b in blocks if isinstance(b, Figure))
    payload = {
        "schema_version": SCHEMA_VERSION,
        "study": view.study.name,
        "run_dir": str(view.run_dir),
        "related": [str(r.run_dir) for r in related],
        "tables": {
            tb.key: {
                "title": tb.title,
                "columns": list(tb.columns),
                "rows": [list(r) for r in tb.rows],
                "notes": list(tb.notes),
                "data": list(tb.data),
            }
            for tb in tables
        },
        "figures": [p.relative_to(view.run_dir).as_posix() for p in figure_paths],
        # The stage tables exactly as tables/*.json holds them (same keys, numbers as numbers).
        "stage_tables": {f"{tb.index}_{tb.name}": tb.to_dict() for tb in view.tables},
        "provenance": _provenance_numbers(view),
    }
    if replication is not None:
        payload["replication"] = replication.to_dict()
    text = json.dumps(_json_safe(payload), indent=1, default=str) + "\n"
    js = write_text_atomic(view.run_dir / "report.json", text)
    return ReportPaths(html, md, js, figure_paths, tuple(r.run_dir for r in related))


def _write_seeds_csv(view: RunView, replication: dict | None, path: Path) -> Path:
    """One row per seed: of every published cell for a replication, else of every finished
    trial. Accuracies in percent, as the report prints them."""
    import csv
    import io

    from hpstudy.atomic import atomic_file
    from hpstudy.config.factors import PAPER_FACTORS

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if replication is not None:
        writer.writerow(["table", "row", "published", *PAPER_FACTORS, "seed", "accuracy",
                         "epochs", "outcome", "verdict"])  # fmt: skip
        for cell in replication["cells"]:
            config = cell.get("config", {})
            n = len(cell.get("seeds", []))
            for i, seed in enumerate(cell.get("seeds", [])):
                writer.writerow([cell["table"], cell["row"], cell["published"],
                                 *(config.get(f) for f in PAPER_FACTORS), seed,
                                 _at(cell.get("accuracies"), i, n), _at(cell.get("epochs"), i, n),
                                 _at(cell.get("outcomes"), i, n), cell.get("verdict")])  # fmt: skip
    else:
        writer.writerow(["trial", *PAPER_FACTORS, "seed", "selection", "accuracy", "best_epoch",
                         "epochs", "outcome", "test_accuracy"])  # fmt: skip
        for r in sorted(view.finished, key=lambda r: r.number):
            test = view.tests.get(r.key)
            writer.writerow([r.number, *(r.config.to_dict().get(f) for f in PAPER_FACTORS),
                             r.seed, r.split.get("selection", ""), _pct(r.best_accuracy),
                             r.best_epoch, r.epochs, r.outcome.value if r.outcome else "",
                             "" if test is None else _pct(test)])  # fmt: skip
    with atomic_file(path, "w") as f:
        f.write(out.getvalue())
    return path


def _at(values, i: int, n: int):
    return values[i] if values and len(values) == n else ""


def _pct(x: float) -> float | str:
    return "" if x is None or math.isnan(x) else round(100 * x, 4)


def _provenance_numbers(view) -> dict:
    """What the reproduce block prints, as numbers for scripts."""
    from hpstudy.config.cost import model_epoch_flops

    finished, info = view.finished, view.info
    return {
        "command": list(info.get("command", [])),
        "machine": info.get("machine", {}),
        "elapsed_s": info.get("elapsed_s"),
        "n_trials": len(finished),
        "model_epochs": sum(r.epochs for r in finished),
        "training_wall_s": sum(r.wall_s for r in finished),
        "training_flops": sum(model_epoch_flops(r.config, r.n_train) * r.epochs for r in finished),
        "epochs_run": {str(r.number): r.epochs for r in finished},
    }


def _json_safe(obj):
    """JSON has no NaN: write null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj
