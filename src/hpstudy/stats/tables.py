"""Result tables as data: one row per configuration, mean ± 95% t-interval over seeds.

    >>> cell = mean_ci([0.881, 0.884, 0.879])
    >>> f"{cell}"                      # '88.13 ± 0.63 (n=3)'
    >>> cell.half95, cell.ci95         # the half-width; [low, high] (fractions)
    >>> table.to_dict(); table.to_csv(); print(format_table(table))
    >>> tables = read_tables("runs/paper")   # the StageTables a run wrote, in stage order

Protocols build the tables from the store (`Protocol.tables(records)`); the run writes each as
`tables/<index>_<name>.json` and `.csv`. Accuracies are fractions in [0, 1] in the data and % in
print; `published` numbers are the paper's, in %. The interval is `intervals.seed_interval`, the
one t-interval every table and verdict uses. `ci95` means `[low, high]` wherever it is written;
the half-width is `half95` (schema 2; schema 1 files called the half-width `ci95` and still load).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hpstudy.atomic import atomic_file
from hpstudy.config.config import Config
from hpstudy.stats.intervals import seed_interval

SCHEMA_VERSION = 2
TABLES_DIR = "tables"


@dataclass(frozen=True)
class Cell:
    """A statistic over seeds: mean, half-width of the 95% t-interval (nan for n < 2), n."""

    mean: float
    half95: float  # half-width of the 95% t-interval: [mean - half95, mean + half95]
    n: int
    values: tuple[float, ...] = ()  # one per seed, in seed order

    @property
    def ci95(self) -> list[float]:
        """[low, high] of the 95% t-interval (fractions; nan for n < 2)."""
        return [self.mean - self.half95, self.mean + self.half95]

    def __str__(self) -> str:
        if self.n == 0:
            return "-"
        if self.n == 1:
            return f"{100 * self.mean:.2f}"
        return f"{100 * self.mean:.2f} ± {100 * self.half95:.2f} (n={self.n})"


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Cell:
    """Mean and t-interval half-width of `values` (nan values are dropped): `seed_interval`."""
    kept = tuple(float(v) for v in values if not math.isnan(v))
    interval = seed_interval(kept, confidence)
    return Cell(interval.mean, interval.half, interval.n, kept)


@dataclass(frozen=True)
class Row:
    """One configuration of a table (all its seeds)."""

    label: str  # the varied factor's value as printed: 'T4', 'Adam', '0.005', 'ReLU'
    config: Config  # the first seed's
    seeds: tuple[int, ...]
    selection: Cell  # best accuracy on the selection split (test for the paper protocol)
    test: Cell | None = None  # test accuracy: paper = selection; clean = stage winner only
    best_epochs: tuple[int, ...] = ()
    epochs: tuple[int, ...] = ()  # epochs run per seed
    outcomes: tuple[str, ...] = ()  # Outcome value per seed
    trial_numbers: tuple[int, ...] = ()
    published: float | None = None  # the paper's number, in %
    is_winner: bool = False


@dataclass(frozen=True)
class StageTable:
    """A stage's table (or a grid's or search's ranking)."""

    study: str
    protocol: str
    index: int  # 1-based stage number
    name: str  # 'topology', 'grid', ...
    title: str
    factor: str  # the varied factor, or '' for grid/search
    selection: str  # 'test' or 'validation'
    rule: str  # the selection rule in one sentence, printed under the table
    rows: tuple[Row, ...] = field(default_factory=tuple)
    schema_version: int = SCHEMA_VERSION

    @property
    def winner(self) -> Row | None:
        return next((r for r in self.rows if r.is_winner), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        for row, out in zip(self.rows, d["rows"], strict=True):
            out["config"] = row.config.to_dict()  # as trial records write it, not every field
        return _nan_to_none(d)

    @classmethod
    def from_dict(cls, d: dict) -> StageTable:
        def cell(c: dict | None) -> Cell | None:
            if c is None:
                return None
            nan = float("nan")
            half = c["half95"] if "half95" in c else c["ci95"]  # schema 1: ci95 was the half
            return Cell(
                nan if c["mean"] is None else c["mean"],
                nan if half is None else half,
                c["n"],
                tuple(c["values"]),
            )

        rows = []
        for r in d["rows"]:
            r = dict(r)
            r["selection"], r["test"] = cell(r["selection"]), cell(r["test"])
            r["config"] = Config.from_dict(r["config"])
            for key in ("seeds", "best_epochs", "epochs", "outcomes", "trial_numbers"):
                r[key] = tuple(r[key])
            rows.append(Row(**r))
        return cls(**{**d, "rows": tuple(rows), "schema_version": SCHEMA_VERSION})

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([
            "stage", "label", "selection_mean", "selection_half95", "n", "test_mean", "test_half95",
            "test_n", "published", "winner", "seeds", "best_epochs", "outcomes", "config",
        ])  # fmt: skip
        for r in self.rows:
            test = r.test or Cell(float("nan"), float("nan"), 0)
            writer.writerow([
                self.name, r.label, _num(r.selection.mean), _num(r.selection.half95),
                r.selection.n, _num(test.mean), _num(test.half95), test.n,
                "" if r.published is None else r.published, int(r.is_winner),
                " ".join(map(str, r.seeds)), " ".join(map(str, r.best_epochs)),
                " ".join(r.outcomes), json.dumps(r.config.to_dict(), sort_keys=True),
            ])  # fmt: skip
        return out.getvalue()


def _num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.6f}"


def _nan_to_none(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    return obj


def format_table(table: StageTable, limit: int | None = None) -> str:
    """The table as aligned plain text (the first `limit` rows), the selection rule underneath."""
    show_test = table.selection != "test" and any(r.test for r in table.rows)
    show_paper = any(r.published is not None for r in table.rows)
    header = ["", table.factor or "configuration", f"{table.selection} acc (%)"]
    header += ["test acc (%)"] if show_test else []
    header += ["paper (%)"] if show_paper else []
    header += ["best epoch"]
    lines = [header]
    for r in table.rows[:limit]:
        line = ["*" if r.is_winner else "", r.label, str(r.selection)]
        line += [str(r.test) if r.test else ""] if show_test else []
        line += ["" if r.published is None else f"{r.published:.1f}"] if show_paper else []
        line += [_best_epochs(r)]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [f"{table.title or table.name}"]
    text += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    if limit is not None and len(table.rows) > limit:
        text.append(f"  ... {len(table.rows) - limit} more rows in the CSV and JSON tables")
    text.append(f"  ({table.rule})")
    return "\n".join(text)


def _best_epochs(row: Row) -> str:
    """'12,13,13', with each trial that did not complete saying how it ended ('2 pruned'): a
    pruned trial's score is its best before the pruner stopped it."""
    outcomes = row.outcomes or ("complete",) * len(row.best_epochs)
    return ",".join(str(e) if o == "complete" else f"{e} {o}"
                    for e, o in zip(row.best_epochs, outcomes, strict=True))  # fmt: skip


def _write_atomic(path: Path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def write_tables(run_dir: str | Path, tables: Sequence[StageTable]) -> list[Path]:
    """`tables/<index>_<name>.json` and `.csv` for each table (atomic writes)."""
    folder = Path(run_dir) / TABLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in tables:
        stem = folder / f"{table.index}_{table.name}"
        for path, text in (
            (stem.with_suffix(".json"), json.dumps(table.to_dict(), indent=1) + "\n"),
            (stem.with_suffix(".csv"), table.to_csv()),
        ):
            _write_atomic(path, text)
            paths.append(path)
    return paths


def read_tables(run_dir: str | Path) -> list[StageTable]:
    """The tables a run wrote, in stage order."""
    folder = Path(run_dir) / TABLES_DIR
    files = sorted(folder.glob("*.json"), key=lambda p: int(p.stem.split("_")[0]))
    return [StageTable.from_dict(json.loads(p.read_text(encoding="utf-8"))) for p in files]


def overstatement(search: Sequence[Row], confirmed: Sequence[Row]) -> list[float]:
    """The winner's curse, per confirmed row: its search-time score minus its confirmed mean
    (fractions; nan where the search has no row of that label). A search score is the best of
    many tries, so it overstates what the configuration does on new seeds."""
    scores = {r.label: r.selection.mean for r in search}
    return [scores.get(r.label, math.nan) - r.selection.mean for r in confirmed]
