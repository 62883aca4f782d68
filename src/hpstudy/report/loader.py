"""Read a run folder for the report: the study, its trials and tables, the final model.

    >>> view = load_run("runs/paper")
    >>> view.study.name, len(view.finished), [t.title for t in view.tables]
    >>> final = evaluate_final_model(view)      # final_best_model.pth on the run's test split
    >>> final.accuracy, final.predictions[:5]
    >>> related = find_related(view)             # sibling runs (clean, grid) for the comparisons

This module is the report's only door into the store: it reads what `hpstudy run` wrote through
`hpstudy.storage.rundir` and `hpstudy.storage`, and recomputes the tables with the function the
run used (`hpstudy.tabulate.tabulate`), so every number the report prints comes from the trial
records, never from the CSV and JSON tables a run also writes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpstudy.config.factors import PAPER_FACTORS, factor_label, factors_key
from hpstudy.config.study import ProtocolKind, Study
from hpstudy.errors import UserError
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord
from hpstudy.storage.rundir import RUN_FILE

FACTOR_KEYS = PAPER_FACTORS  # the paper's factors: what its published numbers fix


@dataclass(frozen=True)
class RunView:
    """Everything the report reads from one run folder, read once."""

    run_dir: Path
    info: dict  # run.json: command line, options, split, versions
    study: Study  # as the run used it (overrides applied)
    records: tuple[TrialRecord, ...]  # every stored trial, by trial number
    tests: dict[str, float]  # trial key -> test accuracy measured once (clean stage winners)
    tables: tuple[StageTable, ...]  # recomputed from `records` (`hpstudy.tabulate`)
    store: object  # the hpstudy.storage.Store it was read from (for parameter importances)
    file_max_epochs: int | None = None  # the study file's own max_epochs, before --max-epochs

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def split(self) -> dict:
        return self.info.get("split", {})

    @property
    def protocol(self) -> ProtocolKind:
        return self.study.protocol

    @property
    def is_staged(self) -> bool:
        """Whether the run has stage tables (staged, and replicate with its staged search)."""
        return _has_stages(self.study)

    @property
    def is_leaky(self) -> bool:
        return self.study.selection.is_leaky

    @property
    def finished(self) -> tuple[TrialRecord, ...]:
        return tuple(r for r in self.records if r.status.is_finished)

    @property
    def by_number(self) -> dict[int, TrialRecord]:
        return {r.number: r for r in self.records}

    @property
    def winner(self):
        """The last table's winning row (the run's final configuration), or None."""
        return self.tables[-1].winner if self.tables else None

    @property
    def limits(self) -> dict:
        """Quick-try limits this run used (`--limit-train`, `--max-epochs` below the study file's
        own), {} if none. A study file that trains longer than the paper is no quick try."""
        options = self.info.get("options", {})
        found = {k: options[k] for k in ("limit_train", "limit_eval") if options.get(k)}
        if self.file_max_epochs is not None and self.study.max_epochs < self.file_max_epochs:
            found["max_epochs"] = self.study.max_epochs
        return found


def load_run(run_dir: str | Path, storage: str | None = None) -> RunView:
    """Read a run folder; a UserError if it is missing, not a run, or holds no finished trial.
    `storage` overrides the storage URL in its run.json (`hpstudy.storage.rundir.open_run`)."""
    from hpstudy.storage.rundir import open_run, read_run_info, study_as_filed
    from hpstudy.tabulate import tabulate

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(
            f"run folder {str(run_dir)!r} does not exist; give the folder `hpstudy run` "
            "wrote, such as runs/paper"
        )
    info = read_run_info(run_dir)
    filed = study_as_filed(info, run_dir)  # parsed once: the run's study is it with overrides
    study = filed.with_overrides(**info["overrides"])
    store = open_run(run_dir, storage)
    records = tuple(store.records())
    if not any(r.status.is_finished for r in records):
        raise UserError(
            f"{run_dir} holds no finished trial yet ({len(records)} stored, none finished); "
            f"run `hpstudy run {info.get('study_file') or study.name} --out {run_dir}` first"
        )
    tests = store.test_accuracies()
    tables = tabulate(study, records, tests, info.get("split", {}))
    return RunView(run_dir, info, study, records, tests, tuple(tables), store, filed.max_epochs)


def find_related(view: RunView, extra: list[str | Path] | tuple = ()) -> list[RunView]:
    """Other runs to compare with: the given folders, else the run's siblings holding a run.json.

    A sibling that cannot be read (another process is writing it, or it holds no finished trial
    yet) is skipped: comparisons are extras, never a reason for the report to fail.
    """
    from hpstudy.storage.rundir import load_study_from_info, read_run_info

    if extra:
        return [load_run(path) for path in extra]
    parent = view.run_dir.resolve().parent
    found = []
    for folder in sorted(p for p in parent.iterdir() if p.is_dir()):
        if folder.resolve() == view.run_dir.resolve() or not (folder / RUN_FILE).is_file():
            continue
        try:  # its run.json says whether it is worth loading its trials
            info = read_run_info(folder)
            if comparable(view.study, load_study_from_info(info, folder), view.info, info):
                found.append(load_run(folder))
        except Exception:  # a broken sibling must not break this report
            continue
    return found


def _has_stages(study: Study) -> bool:
    return study.protocol in (ProtocolKind.STAGED, ProtocolKind.REPLICATE)


def comparable(study: Study, other: Study, info: dict | None = None,
               other_info: dict | None = None) -> bool:  # fmt: skip
    """Whether a report of `study`'s run has a comparison with `other`'s: the same data (name
    and, where both runs recorded them, the files' digests), the same budget (epochs, patience,
    batch size, quick-try limits: `info`, `other_info` are the runs' run.json), and a protocol
    it can compare with: a staged run against a grid (where the staged winner ranks), or runs on
    either side of the test-set leak (the leakage gap). A sibling on other data, say digits
    beside FashionMNIST, or with neither comparison, say a CNN search beside the grid, is left
    out of the report instead of being listed as compared with."""
    if _data_of(study, info or {}) != _data_of(other, other_info or {}):
        return False
    if _budget_of(study, info or {}) != _budget_of(other, other_info or {}):
        return False
    grid = ProtocolKind.GRID
    staged_grid = (_has_stages(study) and other.protocol is grid) or (
        study.protocol is grid and _has_stages(other)
    )
    return staged_grid or study.selection.is_leaky != other.selection.is_leaky


def _data_of(study: Study, info: dict) -> tuple:
    """What a run trained on: the data's name and inputs (digests, where run.json has them)."""
    data = info.get("data", {})
    return (study.data_label, study.data, study.n_inputs, study.n_classes, data.get("name"),
            data.get("digests"))  # fmt: skip


def _budget_of(study: Study, info: dict) -> tuple:
    """What a run could spend per trial: epochs, patience, batch, and its quick-try limits."""
    options = info.get("options", {})
    return (study.max_epochs, study.patience, study.batch_size,
            options.get("limit_train"), options.get("limit_eval"))  # fmt: skip


@dataclass(frozen=True)
class Published:
    """One of the paper's numbers and the configuration it was measured on."""

    accuracy: float  # %
    factors: tuple  # (topology, optimizer, lr, activation), as `factors_of` gives them


def published_numbers(view: RunView) -> dict[str, dict[str, Published]]:
    """Stage name -> {row label -> the paper's number} for a staged run.

    A study file's own `published` lists come first; a staged study without them (clean.toml)
    borrows paper.toml's for stages that vary the same factor, since both search the same space.
    Each number keeps the configuration the paper measured it on: the paper carried its own
    winners forward (T4, then Adam, then 0.005), so where this run's earlier stages chose
    differently, its row and the paper's differ in more than the stage's factor.
    """
    study = view.study
    if study.protocol not in (ProtocolKind.STAGED, ProtocolKind.REPLICATE):
        return {}
    paper = None
    # The paper's numbers are FashionMNIST's: a study on other data borrows none of them.
    if study.is_fashion_mnist and any(stage.published is None for stage in study.stages):
        from hpstudy.config.studyfile import load_study

        try:
            paper = load_study("paper")
        except UserError:
            paper = None
    paths = {id(study): _paper_path(study)}
    numbers: dict[str, dict[str, Published]] = {}
    for stage in study.stages:
        source, owner = stage, study
        if stage.published is None and paper is not None:
            found = next((s for s in paper.stages if s.factor == stage.factor), None)
            source, owner = (found, paper) if found else (stage, study)
        if not source.published:
            continue
        path = paths.setdefault(id(owner), _paper_path(owner))
        numbers[stage.name] = {
            factor_label(source.factor, v): Published(p, factors_key({**path[source.name],
                                                                    source.factor: v}))
            for v, p in zip(source.values, source.published, strict=True)
        }  # fmt: skip
    return numbers


def _paper_path(study: Study) -> dict[str, dict]:
    """Stage name -> the factors the published study held fixed in that stage (its winners)."""
    base, path = dict(study.start), {}
    for stage in study.stages:
        path[stage.name] = dict(base)
        if stage.published:
            best = max(range(len(stage.values)), key=lambda i: stage.published[i])
            base[stage.factor] = stage.values[best]
    return path


def published_final(view: RunView) -> float | None:
    """The paper's final test accuracy (%), from the study file or else paper.toml."""
    if view.study.published_final is not None:
        return view.study.published_final
    if not view.study.is_fashion_mnist:
        return None  # the paper's number is FashionMNIST's
    from hpstudy.config.studyfile import load_study

    try:
        return load_study("paper").published_final
    except UserError:
        return None


@dataclass(frozen=True)
class FinalModel:
    """final_best_model.pth evaluated on the run's test split."""

    path: Path
    config: object  # hpstudy.config.config.Config
    metadata: dict
    class_names: tuple[str, ...]
    labels: np.ndarray  # (N,) true classes of the test split
    predictions: np.ndarray  # (N,) the model's classes
    images: np.ndarray | None  # (N, H, W) uint8 on 0..255, the test images; None: features
    train_labels: np.ndarray  # (M,) classes of the training split (class distribution plot)

    @property
    def accuracy(self) -> float:
        return float((self.labels == self.predictions).mean())


def evaluate_final_model(view: RunView, data_dir: str | None = None,
                         data=None) -> FinalModel | None:  # fmt: skip
    """The run's final model on its test split; None if no model. `data`: the run's own prepared
    data (`RunSummary.data`), else rebuilt from run.json as the run built it."""
    from hpstudy.predict.modelfile import load_model
    from hpstudy.storage.rundir import MODEL_FILE

    path = view.run_dir / MODEL_FILE
    if not path.is_file():
        return None
    loaded = load_model(path)
    if data is None or str(data.device) != "cpu":
        # A GPU run's tensors were normalised on the GPU: the report evaluates CPU tensors, so
        # that it prints what `hpstudy report` prints later, bit for bit.
        data = _rebuild_data(view, data_dir)
    test = data.test
    evaluation = loaded.evaluate(test)
    mean, std = loaded.normalization
    images = None
    if len(data.input_shape) == 2:
        # Undo the normalisation to show the images: x = (pixel / 255 - mean) / std; shown on
        # 0..255 whatever range the data uses (digits: 0..16).
        x = test.x.numpy().astype(np.float64)
        pixels = (x * std + mean) * 255 * (255 / (data.pixel_max or 255))
        images = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
        images = images.reshape(-1, *data.input_shape)
    return FinalModel(
        path=path,
        config=loaded.config,
        metadata=loaded.metadata,
        class_names=loaded.class_names,
        labels=test.y.numpy(),
        predictions=np.asarray(evaluation.predictions),
        images=images,
        train_labels=data.train.y.numpy(),
    )


def _rebuild_data(view: RunView, data_dir: str | None):
    """The run's data, prepared again from the options run.json recorded."""
    from hpstudy.data.prepare import prepare_data
    from hpstudy.runner.options import RunOptions

    known = {f.name for f in dataclasses.fields(RunOptions)}
    options = {k: v for k, v in view.info.get("options", {}).items() if k in known}
    # Evaluate on the CPU whatever the run trained on: 10,000 images take well under a second,
    # and the report must work on a laptop that has no GPU (so no TF32 and no CUDA graphs, which
    # the CPU refuses; TF32 is float32 data).
    options |= {"device": "cpu", "data_dir": data_dir or options.get("data_dir"),
                "cuda_graphs": False}  # fmt: skip
    if options.get("dtype") == "tf32":
        options["dtype"] = "float32"
    return prepare_data(view.study, RunOptions(**options))
