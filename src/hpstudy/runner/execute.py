"""Run a study end to end: data, run folder, store, protocol, tables, final model.

    >>> study = load_study("paper")
    >>> summary = run_study(study, RunOptions(out="runs/paper"), on_event=print)
    >>> summary.tables, summary.model_path, summary.model_epochs, summary.floor_s

The run folder holds `run.json` (study, storage URL without its password, options, split),
`study.db` (the default SQLite store), `tables/` (CSV and JSON per stage), `weights/` (staged
runs: cached best-epoch weights of stage winners) and `final_best_model.pth`. One `hpstudy run`
at a time per folder (a lock file); a rerun continues where the last one stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hpstudy.config.config import Config
from hpstudy.config.factors import space_size, topologies
from hpstudy.config.study import ProtocolKind, Selection, Study
from hpstudy.data.prepare import prepare_data
from hpstudy.engine.flops import measure_matmul_flops
from hpstudy.errors import UserError
from hpstudy.protocols import ReplicateProtocol, Trainer, make_protocol
from hpstudy.protocols.events import DataWarning
from hpstudy.protocols.replication import held_out_split
from hpstudy.runner.options import RunOptions
from hpstudy.stats.tables import StageTable, write_tables
from hpstudy.storage import Store, TrialRecord, check_durable, default_url, storage_errors
from hpstudy.storage.atomic import atomic_file
from hpstudy.storage.rundir import (
    MODEL_FILE,
    REPLICATION_FILE,
    WEIGHTS_DIR,
    clear_outputs,
    exclusive,
    load_study_from_info,
    make_run_dir,
    open_run,
    read_run_info,
    record_elapsed,
    refuse_other_study,
    update_run_info,
    write_run_info,
)

MAX_TRIALS_UNASKED = 10_000  # a larger plan needs --yes (`--seeds 100000` was a typo once)
_STAGED_KINDS = (ProtocolKind.STAGED, ProtocolKind.REPLICATE)  # cache stage winners' weights


@dataclass
class RunSummary:
    run_dir: Path
    tables: list[StageTable]
    model_path: Path | None
    n_trained: int  # trials this invocation trained
    model_epochs: int  # epochs trained, summed over all finished trials of the study
    wall_s: float  # training wall time of those trials
    floor_s: float  # FLOP floor of those model-epochs on the device
    elapsed_s: float  # this invocation, end to end
    records: list[TrialRecord] = field(default_factory=list)


def run_dir_for(study: Study, options: RunOptions) -> Path:
    return Path(options.out) if options.out else Path("runs") / study.name


def planned_trials(study: Study) -> int:
    """Most trials the study can ask for (reuse between stages only lowers it)."""
    if study.protocol is ProtocolKind.GRID:
        n_configs = int(space_size(study.space))  # a grid has no ranges
    elif study.protocol is ProtocolKind.SEARCH:
        n_configs = study.n_trials
    else:
        n_configs = sum(len(stage.values) for stage in study.stages)
    if study.protocol is ProtocolKind.REPLICATE:
        # --with-clean: the clean arm and the held-out arm (test-selected on the clean split)
        return n_configs * (study.n_seeds * (1 + 2 * study.with_clean) + study.staged_seeds)
    return n_configs * study.n_seeds


def check_plan(study: Study, options: RunOptions) -> None:
    """Refuse a plan above MAX_TRIALS_UNASKED trials unless `options.yes`; name its cost."""
    from hpstudy.engine.flops import model_epoch_flops

    n_trials = planned_trials(study)
    if n_trials <= MAX_TRIALS_UNASKED or options.yes:
        return
    model_epochs = n_trials * study.max_epochs
    n_train = options.limit_train or 60_000
    widest = max(model_epoch_flops(Config(topology=t), n_train) for t in topologies(study.space))
    raise UserError(f"{study.name} with {study.n_seeds:,} seeds plans up to {n_trials:,} trials "
                    f"({model_epochs:,} model-epochs, up to {model_epochs * widest / 1e15:,.3g} "
                    f"PFLOP); above {MAX_TRIALS_UNASKED:,} trials hpstudy asks first: add --yes "
                    "to go ahead, or lower --seeds")  # fmt: skip


def use_threads(options: RunOptions) -> None:
    """torch's CPU threads as --threads asks, for the rest of the process (the run info and the
    report record the count in use)."""
    if options.threads is not None:
        import torch

        torch.set_num_threads(options.threads)


@contextlib.contextmanager
def releasing(store: Store, *, private: bool) -> Iterator[None]:
    """On any exit by exception (Ctrl-C, SIGTERM, a crash), mark the trials this process holds
    interrupted, so `status` shows none as running; kill -9 is left to the heartbeats."""
    try:
        yield
    except BaseException:
        with _signals_held(), contextlib.suppress(Exception):
            # In the folder's own store (we hold its lock) every RUNNING trial is ours, also
            # one claimed a moment before the interrupt arrived.
            store.fail_stale(all_running=True) if private else store.release_held()
        raise


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """A second Ctrl-C must not cut the clean-up short (main thread only: signals live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def open_store(study: Study, options: RunOptions, run_dir: Path) -> Store:
    url = options.storage or default_url(run_dir)
    return Store(url, study.name, grace_s=options.grace_s)


def run_study(
    study: Study, options: RunOptions, *, on_event: Callable[[object], None] = lambda e: None
) -> RunSummary:
    """Run (or resume) a study; returns its tables, final model and costs."""
    start = time.perf_counter()
    use_threads(options)
    run_dir = run_dir_for(study, options)
    check_plan(study, options)
    if options.storage:
        check_durable(options.storage)
    # The data is loaded and checked before the run folder exists: bad data leaves nothing.
    data = prepare_data(study, options)
    for text in data.warnings:
        on_event(DataWarning(text))
    study = study.with_data_shape(data.n_inputs, data.n_classes)
    make_run_dir(run_dir)
    store = open_store(study, options, run_dir)
    private = options.storage is None  # study.db in the folder: nobody else writes it
    with exclusive(run_dir), storage_errors(store.url), releasing(store, private=private):
        refuse_other_study(run_dir, study, options, store)
        if options.fresh:
            store.delete()
            clear_outputs(run_dir)
        store.create_or_load()
        if options.storage is None:
            store.fail_stale(all_running=True)  # our lock: nobody else writes this SQLite file
        write_run_info(run_dir, study, options, data)
        trainer = Trainer(store, data, protocol=study.protocol.value, space=study.space,
                          on_event=on_event, batch=options.batch or study.batch,
                          weights_dir=run_dir / WEIGHTS_DIR
                          if study.protocol in _STAGED_KINDS else None)  # fmt: skip
        protocol = make_protocol(study, trainer)
        if study.protocol is ProtocolKind.REPLICATE and study.with_clean:
            protocol.clean = clean_trainer(study, options, trainer, run_dir)
            protocol.held_out = held_out_trainer(protocol.clean)
        tables = protocol.run()
        write_tables(run_dir, tables)
        if isinstance(protocol, ReplicateProtocol):
            records = store.records()
            replication = protocol.replication(records, tests=store.test_accuracies())
            write_replication(run_dir, replication)
            # The final model is the recommended configuration at the first seed, fixed in
            # advance: never the best of the seeds on the test set (none if it did not train).
            final = protocol.final_record(replication, records, trainer.data.split)
            model_path = final and save_final_model(study, trainer, tables, run_dir, record=final)
        else:
            model_path = save_final_model(study, trainer, tables, run_dir)
        record_elapsed(run_dir, time.perf_counter() - start)
    records = store.records()
    costs = cost_summary(records, options.device, read_run_info(run_dir).get("matmul_flops"))
    trainers = protocol.trainers if isinstance(protocol, ReplicateProtocol) else [trainer]
    n_trained = sum(len(t.trained) for t in trainers)  # the clean arms' trials count too
    return RunSummary(run_dir, tables, model_path, n_trained, **costs,
                      elapsed_s=time.perf_counter() - start, records=records)  # fmt: skip


def clean_trainer(study: Study, options: RunOptions, trainer: Trainer, run_dir: Path) -> Trainer:
    """`--with-clean`: a second trainer on the same store whose split selects on validation
    (its trials have other keys); run.json keeps that split for the report."""
    clean = dataclasses.replace(study, selection=Selection.VALIDATION)
    data = prepare_data(clean, options)
    update_run_info(run_dir, clean_split=data.split)
    return Trainer(trainer.store, data, protocol=trainer.protocol, space=trainer.space,
                   on_event=trainer.on_event, batch=trainer.batch,
                   weights_dir=trainer.weights_dir)  # fmt: skip


def held_out_trainer(clean: Trainer) -> Trainer:
    """`--with-clean`'s third arm: the clean run's training images (54,000 for FashionMNIST),
    the epoch chosen on the test set as the paper did (`replicate.held_out_split`); its trials
    have keys of their own. It measures how much of the leak is the smaller training set."""
    data = dataclasses.replace(clean.data, evaluation=clean.data.test,
                               split=held_out_split(clean.data.split))  # fmt: skip
    return Trainer(clean.store, data, protocol=clean.protocol, space=clean.space,
                   on_event=clean.on_event, batch=clean.batch,
                   weights_dir=clean.weights_dir)  # fmt: skip


def write_replication(run_dir: Path, replication) -> Path:
    """replication.json: every published cell and claim with its verdict (for scripts)."""
    path = Path(run_dir) / REPLICATION_FILE
    with atomic_file(path, "w") as f:
        json.dump(replication.to_dict(), f, indent=1)
        f.write("\n")
    return path


def run_worker(
    study: Study, options: RunOptions, *, on_event: Callable[[object], None] = lambda e: None
) -> int:
    """Train a share of a grid study held in a shared storage; returns trials trained here."""
    if study.protocol is not ProtocolKind.GRID:
        raise UserError(
            f"workers share grid studies; {study.path} has protocol = "
            f"{study.protocol.value!r}; use `hpstudy run` for it"
        )
    if not options.storage:
        raise UserError(
            "a worker needs --storage URL (e.g. postgresql://user@host/db) that "
            "every worker and the final `hpstudy run` share"
        )
    check_plan(study, options)
    use_threads(options)
    store = open_store(study, options, Path("."))
    with storage_errors(store.url), releasing(store, private=False):
        data = prepare_data(study, options)
        study = study.with_data_shape(data.n_inputs, data.n_classes)
        store.create_or_load()
        trainer = Trainer(store, data, protocol=study.protocol.value, space=study.space,
                          on_event=on_event, batch=options.batch or study.batch)  # fmt: skip
        make_protocol(study, trainer).run()
    return len(trainer.trained)


def save_final_model(
    study: Study,
    trainer: Trainer,
    tables: list[StageTable],
    run_dir: Path,
    *,
    record: TrialRecord | None = None,
) -> Path | None:
    """final_best_model.pth: `record` where the protocol chose it (a replication: the
    recommended configuration at the first seed), else the last table's winner, its best seed
    on the selection split."""
    from hpstudy import engine
    from hpstudy.predict.modelfile import save_model

    if record is not None:
        best = record
    else:
        winner = tables[-1].winner if tables else None
        if winner is None:
            return None
        finished = trainer.store.finished()
        records = [r for r in finished.values()
                   if r.number in winner.trial_numbers and r.is_usable]  # fmt: skip
        best = max(records, key=lambda r: (r.best_accuracy, -r.seed))
    state_dict, retrained = trainer.weights_of(best)
    tests = trainer.store.test_accuracies()
    if study.selection.is_leaky:
        test_accuracy = best.best_accuracy
    elif best.key in tests:
        test_accuracy = tests[best.key]
    else:
        evaluation = engine.evaluate(best.config, state_dict, trainer.data.test,
                                     device=trainer.data.device)  # fmt: skip
        test_accuracy = evaluation.accuracy
    metrics = {
        "test_accuracy": float(test_accuracy),
        f"{study.selection.value}_accuracy": float(best.best_accuracy),
        "best_epoch": float(best.best_epoch),
    }
    extra = {
        "study": study.name,
        "protocol": study.protocol.value,
        "selection": study.selection.value,
        "trial_number": best.number,
        "split": trainer.data.split,
        "retrained": retrained,
        "device": trainer.data.device,
        "input_shape": list(trainer.data.input_shape),
        "pixel_max": trainer.data.pixel_max,
    }
    return save_model(run_dir / MODEL_FILE, state_dict=state_dict, config=best.config,
                      normalization=trainer.data.normalization, metrics=metrics,
                      data_digests=trainer.data.digests, class_names=trainer.data.class_names,
                      extra=extra)  # fmt: skip


def cost_summary(
    records: list[TrialRecord], device: str, matmul_flops: float | None = None
) -> dict[str, float]:
    """model_epochs, wall_s and floor_s over the finished trials; the floor divides their FLOPs
    by `matmul_flops` (the run's recorded throughput), else by a fresh measurement."""
    from hpstudy.engine.flops import model_epoch_flops

    done = [r for r in records if r.status.is_finished]
    flops = sum(model_epoch_flops(r.config, r.n_train) * r.epochs for r in done)
    throughput = matmul_flops or measure_matmul_flops(device)
    return {
        "model_epochs": sum(r.epochs for r in done),
        "wall_s": sum(r.wall_s for r in done),
        "floor_s": flops / throughput if flops else 0.0,
    }


def recompute_tables(run_dir: str | Path, storage: str | None = None) -> list[StageTable]:
    """A run's tables recomputed from its store alone (what the report checks against);
    `storage` overrides the URL in run.json (`open_run`)."""
    info = read_run_info(run_dir)
    study = load_study_from_info(info, run_dir)
    store = open_run(run_dir, storage)
    tests = store.test_accuracies()
    return make_protocol(study).tables(store.records(), tests, split=info["split"])
