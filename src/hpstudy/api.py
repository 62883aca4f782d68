"""The library a notebook calls: a study in, a run out, and every run readable as tables.

    >>> import hpstudy as hs
    >>> study = hs.load_study("digits").replace(max_epochs=5, n_seeds=3)
    >>> run = hs.run(study, out="runs/digits-5")   # as `hpstudy run digits --seeds 3 ...`
    >>> run.trials_df()       # one row per trial: params_*, seed, state, outcome, accuracies
    >>> run.configs_df()      # one row per configuration: mean, 95% t-interval, n
    >>> run.curves_df()       # long format: one row per trial, epoch and metric
    >>> run.best, run.model(), run.report(), run.optuna_study
    >>> run = hs.open_run("runs/digits-5")          # read-only; or hs.open_run("digits")
    >>> run = hs.open_run("postgresql://me@db/hp", study="grid")   # a shared storage

Each call is the one the CLI makes, with the CLI's defaults (`device=None`: CUDA when present,
else the CPU), so a run started here and one started by `hpstudy run` are the same run and either
continues the other. Opening a run writes nothing; `Run.report` writes the report into the run
folder, as `hpstudy report` does. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from hpstudy.config.config import Config
from hpstudy.config.factors import FACTORS, SHAPE_FACTORS, searched, value_of
from hpstudy.config.study import SLUG, Study
from hpstudy.config.studyfile import load_study
from hpstudy.errors import UserError
from hpstudy.runner.devices import resolve_device
from hpstudy.runner.execute import RunSummary, run_study
from hpstudy.runner.options import RunOptions
from hpstudy.stats.tables import read_tables
from hpstudy.storage import (
    Store,
    TrialRecord,
    TrialStatus,
    default_url,
    params_of,
    redact_url,
    sqlite_file,
    storage_errors,
)
from hpstudy.storage.rundir import MODEL_FILE, RUN_FILE, load_study_from_info, read_run_info
from hpstudy.storage.rundir import open_run as open_run_store
from hpstudy.tabulate.rows import make_row

__all__ = ["Best", "Run", "load_study", "open_run", "run"]

RUNS_DIR = "runs"  # where `hpstudy run NAME` puts a run without --out, and open_run looks


def run(
    study: Study | str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    device: str | None = None,
    on_event: Callable[[object], None] | None = None,
    **options: Any,
) -> Run:
    """Run (or continue) a study, as `hpstudy run` does, and return the run.

    `study`: a Study, or a study name or file as `load_study` takes. `out`: the run folder
    (default runs/<study>). `device`: cpu, cuda or cuda:N (default: CUDA when available).
    `on_event`: called with each progress event (default: silent). Other keywords are the
    CLI's options under RunOptions' names: storage, fresh, dtype, limit_train, limit_eval,
    data_dir, batch, grace_s, cuda_graphs, concurrent_populations, yes, threads. The report is
    not written here: call `Run.report()`.
    """
    if not isinstance(study, Study):
        study = load_study(study)
    known = {f.name for f in fields(RunOptions)} - {"out", "device"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"hpstudy.run got an unknown option {unknown[0]!r}; expected out, "
                        f"device, on_event or one of {', '.join(sorted(known))}")  # fmt: skip
    run_options = RunOptions(out=None if out is None else str(out),
                             device=str(resolve_device(device)), **options)  # fmt: skip
    summary = run_study(study, run_options, on_event=on_event or _silent)
    return Run._of_folder(summary.run_dir, storage=run_options.storage, summary=summary)


def open_run(
    source: str | os.PathLike, study: str | None = None, *, storage: str | None = None
) -> Run:
    """A finished or running run, read-only.

    `source`: a run folder; a study name whose run folder is runs/<name> (`hpstudy run NAME`'s
    default); or a storage URL, with `study` naming the study in it (a storage may hold several).
    `storage`: a URL that overrides the one the folder's run.json recorded (which keeps no
    password).
    """
    text = os.fspath(source)
    if "://" in text:
        if not study:
            raise UserError(f"give the study name to open {redact_url(text)!r} (a storage may "
                            "hold several): hpstudy.open_run(url, study='NAME')")  # fmt: skip
        return Run(_existing_store(text, study, where=redact_url(text)), study_name=study)
    folder = Path(text)
    by_name = Path(RUNS_DIR) / text
    if (not (folder / RUN_FILE).exists() and SLUG.fullmatch(text)
            and (by_name / RUN_FILE).exists()):  # fmt: skip
        folder = by_name
    run_ = Run._of_folder(folder, storage=storage)
    if study is not None and study != run_.study_name:
        raise UserError(f"{folder} holds study {run_.study_name!r}, not {study!r}; give that "
                        "study's run folder, or leave study out")  # fmt: skip
    return run_


@dataclass(frozen=True)
class Best:
    """The configuration a run chose: its last table's winner, mean over seeds."""

    config: Config  # the winner (its first seed)
    label: str  # as the tables print it: 'T1 Adam 0.01 ReLU'
    selection: str  # the split that chose it: 'validation' or 'test' (the paper's leak)
    mean: float  # mean best accuracy on that split over its seeds
    half95: float  # half-width of the 95% t-interval (nan for one seed)
    n: int  # seeds in the mean
    seeds: tuple[int, ...]
    test_mean: float  # mean test accuracy where measured (= mean when selection is test)

    def __str__(self) -> str:
        spread = f" ± {100 * self.half95:.2f}" if self.n > 1 else ""
        test = "" if self.selection == "test" or math.isnan(self.test_mean) else \
            f", test {100 * self.test_mean:.2f}%"  # fmt: skip
        return (f"{self.label}: {self.selection} {100 * self.mean:.2f}{spread}% "
                f"(n={self.n}){test}")  # fmt: skip


class Run:
    """One study's trials, from its run folder (or a storage URL alone), read as DataFrames."""

    def __init__(
        self,
        store: Store,
        *,
        study_name: str,
        folder: Path | None = None,
        study: Study | None = None,
        storage: str | None = None,
        summary: RunSummary | None = None,
    ) -> None:
        self._store = store
        self.study_name = study_name
        self.folder = folder  # None when opened from a storage URL alone
        self.study = study  # the study as the run ran it (None from a storage URL alone)
        self.storage = storage  # the URL given to override run.json's
        self.summary = summary  # what `run` returned (None when opened)

    @classmethod
    def _of_folder(
        cls, folder: Path, *, storage: str | None, summary: RunSummary | None = None
    ) -> Run:
        info = read_run_info(folder)
        url = storage or info.get("storage") or default_url(folder)
        _check_sqlite_file(url, where=str(folder))
        store = open_run_store(folder, storage)
        return cls(store, study_name=info["study"], folder=Path(folder),
                   study=load_study_from_info(info, folder), storage=storage,
                   summary=summary)  # fmt: skip

    def __repr__(self) -> str:
        where = self.folder if self.folder is not None else redact_url(self._store.url)
        return f"<hpstudy.Run {self.study_name!r} at {where}>"

    # -- tables ------------------------------------------------------------------------------

    def trials_df(self) -> pd.DataFrame:
        """One row per trial, by trial number: `number`, `params_<factor>` (as Optuna stores
        them), `seed`, `state`, `outcome`, `best_epoch`, `epochs`, `validation_accuracy` and
        `test_accuracy` (at the best epoch; nan where not measured), `selection`,
        `datetime_start`, `datetime_complete`, `duration`."""
        records, tests = self._records(), self._tests()
        names = self._factor_names(records)
        rows = []
        for r in records:
            done = r.status.is_finished
            accuracy = r.best_accuracy if done else math.nan
            on_test = r.split.get("selection") == "test"
            rows.append({
                "number": r.number, **_params(r.config, names), "seed": r.seed,
                "state": r.status.value, "outcome": r.outcome.value if r.outcome else None,
                "best_epoch": r.best_epoch if done else None, "epochs": r.epochs if done else None,
                "validation_accuracy": math.nan if on_test else accuracy,
                "test_accuracy": accuracy if on_test else tests.get(r.key, math.nan),
                "selection": r.split.get("selection"),
                "datetime_start": r.datetime_start, "datetime_complete": r.datetime_complete,
            })  # fmt: skip
        columns = ["number", *_param_columns(names), "seed", "state", "outcome", "best_epoch",
                   "epochs", "validation_accuracy", "test_accuracy", "selection",
                   "datetime_start", "datetime_complete"]  # fmt: skip
        df = pd.DataFrame(rows, columns=columns)
        df["best_epoch"] = df["best_epoch"].astype("Int64")
        df["epochs"] = df["epochs"].astype("Int64")
        df["duration"] = pd.to_datetime(df["datetime_complete"]) - pd.to_datetime(
            df["datetime_start"]
        )
        return df

    def configs_df(self) -> pd.DataFrame:
        """One row per configuration (and selection split), best first: `params_<factor>`,
        `selection`, `mean`, `ci_low`, `ci_high` (95% t-interval over seeds, as the run's tables
        compute it; nan for one seed), `n` (seeds that completed or were pruned), `test_mean`
        (nan where the test set was not read), `seeds`, `numbers` (trial numbers)."""
        finished = [r for r in self._records() if r.status.is_finished]
        tests = self._tests()
        names = self._factor_names(finished)
        groups: dict[tuple, list[TrialRecord]] = {}
        for r in finished:
            split = json.dumps(r.split, sort_keys=True, default=str)
            groups.setdefault((r.config.replace(seed=0), split), []).append(r)
        rows = []
        for group in groups.values():
            selection = group[0].split.get("selection")
            row = make_row("", group, tests=tests, leaky=selection == "test")
            cell = row.selection
            rows.append({
                **_params(group[0].config, names), "selection": selection, "mean": cell.mean,
                "ci_low": cell.ci95[0], "ci_high": cell.ci95[1], "n": cell.n,
                "test_mean": row.test.mean if row.test else math.nan,
                "seeds": row.seeds, "numbers": row.trial_numbers,
            })  # fmt: skip
        columns = [*_param_columns(names), "selection", "mean", "ci_low", "ci_high", "n",
                   "test_mean", "seeds", "numbers"]  # fmt: skip
        df = pd.DataFrame(rows, columns=columns)
        return df.sort_values("mean", ascending=False, na_position="last", kind="stable") \
            .reset_index(drop=True)  # fmt: skip

    def curves_df(self) -> pd.DataFrame:
        """Training curves in long format, one row per finished trial, epoch and metric:
        `number`, `params_<factor>`, `seed`, `epoch` (1-based), `metric` (`train_loss`,
        `<split>_loss`, `<split>_accuracy`, the split being the one that selected), `value`."""
        finished = [r for r in self._records() if r.status.is_finished]
        names = self._factor_names(finished)
        rows = []
        for r in finished:
            split = r.split.get("selection", "eval")
            base = {"number": r.number, **_params(r.config, names), "seed": r.seed}
            series = (("train_loss", r.train_loss), (f"{split}_loss", r.eval_loss),
                      (f"{split}_accuracy", r.eval_accuracy))  # fmt: skip
            for metric, values in series:
                for epoch, value in enumerate(values, start=1):
                    rows.append(base | {"epoch": epoch, "metric": metric, "value": value})
        columns = ["number", *_param_columns(names), "seed", "epoch", "metric", "value"]
        return pd.DataFrame(rows, columns=columns)

    # -- the outcome -------------------------------------------------------------------------

    @property
    def best(self) -> Best | None:
        """The configuration the run chose (its last table's winner, as `hpstudy run` printed
        it); None before the run has finished a table."""
        tables = read_tables(self._need_folder("best"))
        winner = tables[-1].winner if tables else None
        if winner is None:
            return None
        return Best(config=winner.config, label=winner.label, selection=tables[-1].selection,
                    mean=winner.selection.mean, half95=winner.selection.half95,
                    n=winner.selection.n, seeds=tuple(winner.seeds),
                    test_mean=winner.test.mean if winner.test else math.nan)  # fmt: skip

    def model(self, device: str = "cpu"):
        """The final model (final_best_model.pth) as `hpstudy.predict.modelfile.LoadedModel`:
        `.model(x)` gives logits, `.config` and `.metadata` explain it."""
        from hpstudy.predict.modelfile import load_model

        path = self._need_folder("model()") / MODEL_FILE
        if not path.is_file():
            raise UserError(f"{path.parent} has no final model ({MODEL_FILE}) yet; run the "
                            "study to its end first: hpstudy.run(study, out=...)")  # fmt: skip
        return load_model(path, device)

    def report(
        self, compare: Sequence[str | os.PathLike] | None = None, *, data_dir: str | None = None
    ):
        """Write report.html, report.md, report.json and figures into the run folder, as
        `hpstudy report` does; `compare`: other run folders (default: the run's siblings).
        Returns `hpstudy.report.ReportPaths`."""
        from hpstudy.report import build_report

        folder = self._need_folder("report()")
        return build_report(folder, compare=tuple(compare or ()), data_dir=data_dir,
                            command="hpstudy.api Run.report (from Python)",
                            storage=self.storage)  # fmt: skip

    def status(self) -> dict:
        """What `hpstudy status --json` prints: counts by outcome, the best, costs, trials."""
        from hpstudy.runner.status import run_status

        return run_status(str(self._need_folder("status()")), self.storage)

    @property
    def optuna_study(self):
        """The `optuna.Study` behind the run, for Optuna's own tools (`trials_dataframe`,
        `optuna.visualization`); read it, and let hpstudy write."""
        with storage_errors(self._store.url):
            return self._store.optuna_study

    # -- helpers -----------------------------------------------------------------------------

    def _records(self) -> list[TrialRecord]:
        with storage_errors(self._store.url):
            return [r for r in self._store.records() if r.status is not TrialStatus.DISCARDED]

    def _tests(self) -> dict[str, float]:
        with storage_errors(self._store.url):
            return self._store.test_accuracies()

    def _factor_names(self, records: Sequence[TrialRecord]) -> tuple[str, ...]:
        """The study's searched factors; from a storage URL alone, those its trials vary."""
        if self.study is not None:
            return searched(self.study.space)
        configs = [r.config for r in records]
        return tuple(name for name in FACTORS if name not in SHAPE_FACTORS
                     and len({repr(value_of(c, name)) for c in configs}) > 1)  # fmt: skip

    def _need_folder(self, what: str) -> Path:
        if self.folder is None:
            raise UserError(
                f"{what} needs the run folder (its tables and model); open the "
                "folder `hpstudy run` wrote: hpstudy.open_run('runs/NAME')"
            )
        return self.folder


def _params(config: Config, names: Sequence[str]) -> dict[str, Any]:
    return {f"params_{name}": value for name, value in params_of(config, names).items()}


def _param_columns(names: Sequence[str]) -> list[str]:
    return [f"params_{name}" for name in names]


def _existing_store(url: str, study: str, *, where: str) -> Store:
    """A Store on a storage that already holds `study`; opening it creates nothing."""
    _check_sqlite_file(url, where=where)
    store = Store(url, study, reader=True)
    with storage_errors(url):
        if not store.exists():
            raise UserError(f"no study {study!r} in {redact_url(url)}; check the name (a run "
                            "folder's run.json names its study)")  # fmt: skip
    return store


def _check_sqlite_file(url: str, *, where: str) -> None:
    """SQLite creates a missing database file on connecting: refuse before that happens."""
    if url.startswith("sqlite") and not Path(sqlite_file(url)).is_file():
        raise UserError(f"{where} holds no trials yet ({sqlite_file(url)} is missing); run the "
                        "study first: hpstudy.run(study, out=...) or `hpstudy run`")  # fmt: skip


def _silent(event: object) -> None:
    """run's default progress callback: a notebook cell stays quiet."""
