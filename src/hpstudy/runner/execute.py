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
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hpstudy.config.config import Config
from hpstudy.config.factors import space_size, topologies
from hpstudy.config.feasible import check_configs
from hpstudy.config.study import ProtocolKind, Selection, Study
from hpstudy.data.prepare import prepare_data
from hpstudy.engine.optimizers import engine_version
from hpstudy.errors import UserError
from hpstudy.protocols import Trainer, make_protocol
from hpstudy.protocols.events import DataWarning
from hpstudy.runner.options import RunOptions
from hpstudy.runner.outputs import cost_summary, save_final_model, write_replication
from hpstudy.runner.phases import PhaseTimes, TimedStore
from hpstudy.stats.tables import StageTable, write_tables
from hpstudy.storage import (
    Store,
    TrialRecord,
    check_durable,
    default_url,
    redact_url,
    storage_errors,
)
from hpstudy.storage.rundir import (
    WEIGHTS_DIR,
    clear_outputs,
    exclusive,
    make_run_dir,
    read_run_info,
    record_elapsed,
    refuse_other_study,
    update_run_info,
    write_run_info,
)
from hpstudy.tabulate import final_record, judge_run
from hpstudy.tabulate.cells import held_out_split

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
    # The data the run trained on (`prepare_data`): a report written right after the run reads
    # its test split from here instead of loading and hashing the dataset again.
    data: object = None


def run_dir_for(study: Study, options: RunOptions) -> Path:
    return Path(options.out) if options.out else Path("runs") / study.name


def planned_trials(study: Study) -> int:
    """Most trials the study can ask for (reuse between stages only lowers it)."""
    if study.protocol is ProtocolKind.GRID:
        n_configs = int(space_size(study.space))  # a grid has no ranges
    elif study.protocol is ProtocolKind.SEARCH:  # the search, then its confirmation round
        return study.n_trials * study.n_seeds + study.confirm_top * study.confirm_seeds
    else:
        n_configs = sum(len(stage.values) for stage in study.stages)
    if study.protocol is ProtocolKind.REPLICATE:
        # --with-clean: the clean arm and the held-out arm (test-selected on the clean split)
        return n_configs * (study.n_seeds * (1 + 2 * study.with_clean) + study.staged_seeds)
    return n_configs * study.n_seeds


def check_plan(study: Study, options: RunOptions) -> None:
    """Refuse a plan above MAX_TRIALS_UNASKED trials unless `options.yes`; name its cost."""
    from hpstudy.config.cost import model_epoch_flops

    n_trials = planned_trials(study)
    if n_trials <= MAX_TRIALS_UNASKED or options.yes:
        return
    model_epochs = n_trials * study.max_epochs
    n_train = options.limit_train or 60_000
    widest = max(model_epoch_flops(Config(topology=t), n_train) for t in topologies(study.space))
    raise UserError(f"{study.name} with {study.n_seeds:,} seeds plans up to {n_trials:,} trials "
                    f"({model_epochs:,} model-epochs, up to {model_epochs * widest / 1e15:,.3g} "
                    f"PFLOP); above {MAX_TRIALS_UNASKED:,} trials hpstudy asks first: add --yes "
                    f"to go ahead, or lower --seeds{_SEARCH_SIZES.get(study.protocol, '')}"
                    )  # fmt: skip


_SEARCH_SIZES = {ProtocolKind.SEARCH: ", n_trials, confirm_top or confirm_seeds"}


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
    finally:
        if private:  # study.db alone holds every trial, and opens on read-only media too
            with contextlib.suppress(Exception):
                store.close_log()


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
    phases = PhaseTimes()
    use_threads(options)
    run_dir = run_dir_for(study, options)
    check_plan(study, options)
    if options.storage:
        check_durable(options.storage)
    # The data is loaded and checked before the run folder exists: bad data leaves nothing.
    with phases.timing("data"):
        data = prepare_data(study, options)
    for text in data.warnings:
        on_event(DataWarning(text))
    study = study.with_data_shape(data.n_inputs, data.n_classes, data.input_shape)
    check_configs(study)  # what the data's shape cannot train, before the folder exists
    clean_data = None
    if study.protocol is ProtocolKind.REPLICATE and study.with_clean:  # its split checked too
        clean_data = prepare_data(dataclasses.replace(study, selection=Selection.VALIDATION),
                                  options)  # fmt: skip
    make_run_dir(run_dir)
    with phases.timing("storage"):
        real_store = open_store(study, options, run_dir)
    store = TimedStore(real_store, phases)
    private = options.storage is None  # study.db in the folder: nobody else writes it
    with exclusive(run_dir), storage_errors(store.url), releasing(store, private=private):
        refuse_other_study(run_dir, study, options, store)
        if options.fresh:
            store.delete()
            clear_outputs(run_dir)
        store.create_or_load()
        if options.storage is None:
            store.fail_stale(all_running=True)  # our lock: nobody else writes this SQLite file
        else:  # shared with workers: the same settings, or other trial keys unnoticed
            store.check_settings(study_settings(study, options, data))
        refuse_mixed_engines(store.records(), data.optimizer_step, run_dir)
        with phases.timing("probe"):
            write_run_info(run_dir, study, options, data)
        trainer = Trainer(store, data, protocol=study.protocol.value, space=study.space,
                          on_event=on_event, batch=engine_call_size(study, options),
                          weights_dir=run_dir / WEIGHTS_DIR
                          if study.protocol in _STAGED_KINDS else None,
                          on_phase=phases.add_engine)  # fmt: skip
        protocol = make_protocol(study, trainer)
        if clean_data is not None:
            protocol.clean = clean_trainer(clean_data, trainer, run_dir)
            protocol.held_out = held_out_trainer(protocol.clean)
        tables = protocol.run()
        with phases.timing("report"):
            write_tables(run_dir, tables)
            records = store.records()
            clean_split = clean_data.split if clean_data else None
            tests = store.test_accuracies()
            replication = judge_run(study, records, trainer.data.split, tests=tests,
                                    clean_split=clean_split)  # fmt: skip
            if replication is not None:  # a replication: its verdict chooses the final model
                write_replication(run_dir, replication)
                # The final model is the recommended configuration at the first seed, fixed in
                # advance: never the best of the seeds on the test set (none if it did not train).
                final = final_record(replication, records, trainer.data.split)
                model_path = final and save_final_model(study, trainer, tables, run_dir,
                                                        record=final)  # fmt: skip
            else:
                model_path = save_final_model(study, trainer, tables, run_dir)
        elapsed = time.perf_counter() - start
        record_elapsed(run_dir, elapsed)
        update_run_info(run_dir, phases_s=phases.line(elapsed))
    records = store.records()
    costs = cost_summary(records, options.device, read_run_info(run_dir).get("matmul_flops"))
    n_trained = sum(len(t.trained) for t in protocol.trainers)  # the clean arms' count too
    return RunSummary(run_dir, tables, model_path, n_trained, **costs,
                      elapsed_s=time.perf_counter() - start, records=records,
                      data=data)  # fmt: skip


# Trials finished before engines had versions were all trained by the grouped step.
_UNVERSIONED_ENGINE = engine_version("grouped")


def engine_call_size(study: Study, options: RunOptions) -> int:
    """Most trials per engine call: `--batch`; else, on a CUDA device, every trial of a grid
    (all its seeds in one call: the engine runs as many populations together as memory allows);
    else the study's `batch` (the CPU runs populations one after another, and a seed per call
    keeps what an interrupt loses, the running population, small)."""
    if options.batch:
        return options.batch
    if study.protocol is ProtocolKind.GRID and str(options.device).startswith("cuda"):
        return Trainer.batch
    return study.batch


def refuse_mixed_engines(records: list[TrialRecord], optimizer_step: str, where) -> None:
    """A UserError when finished float32 trials were trained by another engine than this run's:
    two engines agree to rounding, not bit for bit, and a table must not mix them silently
    (float64 results agree to 1e-9 and pass)."""
    ours = engine_version(optimizer_step)
    others: dict[str, int] = {}
    for r in records:
        if r.status.is_finished and r.dtype.startswith("float32"):
            theirs = r.versions.get("engine", _UNVERSIONED_ENGINE)
            if theirs != ours:
                others[theirs] = others.get(theirs, 0) + 1
    if not others:
        return
    theirs, n = max(others.items(), key=lambda item: item[1])
    step = theirs.partition("-")[2]
    raise UserError(f"{where} holds {n} float32 trials trained by engine {theirs}, this run's is "
                    f"{ours} (float32 bits differ): rerun with --optimizer-step {step}, or "
                    "--fresh to retrain them all")  # fmt: skip


def clean_trainer(data, trainer: Trainer, run_dir: Path) -> Trainer:
    """`--with-clean`: a second trainer on the same store on `data`, whose split selects on
    validation (its trials have other keys); run.json keeps that split for the report."""
    update_run_info(run_dir, clean_split=data.split)
    return Trainer(trainer.store, data, protocol=trainer.protocol, space=trainer.space,
                   on_event=trainer.on_event, batch=trainer.batch,
                   weights_dir=trainer.weights_dir, on_phase=trainer.on_phase)  # fmt: skip


def held_out_trainer(clean: Trainer) -> Trainer:
    """`--with-clean`'s third arm: the clean run's training images (54,000 for FashionMNIST),
    the epoch chosen on the test set as the paper did (`tabulate.cells.held_out_split`); its trials
    have keys of their own. It measures how much of the leak is the smaller training set."""
    data = dataclasses.replace(clean.data, evaluation=clean.data.test,
                               split=held_out_split(clean.data.split))  # fmt: skip
    return Trainer(clean.store, data, protocol=clean.protocol, space=clean.space,
                   on_event=clean.on_event, batch=clean.batch,
                   weights_dir=clean.weights_dir, on_phase=clean.on_phase)  # fmt: skip


def run_worker(
    study: Study, options: RunOptions, *, on_event: Callable[[object], None] = lambda e: None
) -> int:
    """Train a share of a study held in a shared storage (any protocol); returns the trials
    trained here. Claims are sized to one population and this worker's share (`Trainer.shared`);
    the study's settings are checked against the ones its first process recorded."""
    if not options.storage:
        raise UserError(
            "a worker needs --storage URL (postgresql://user@host/db, or "
            "journal:///shared/folder/study.log on a shared file system) that every worker and "
            "the final `hpstudy run` share"
        )
    if study.protocol is ProtocolKind.REPLICATE and study.with_clean:
        raise UserError(f"workers do not run {study.name}'s --with-clean half; leave with_clean "
                        "out for the workers, then run `hpstudy run --with-clean --storage URL` "
                        "once at the end")  # fmt: skip
    check_plan(study, options)
    use_threads(options)
    # The data and what its shape can train are checked before this worker joins the study.
    data = prepare_data(study, options)
    for text in data.warnings:  # a worker's user is told what `hpstudy run` tells
        on_event(DataWarning(text))
    study = study.with_data_shape(data.n_inputs, data.n_classes, data.input_shape)
    check_configs(study)
    store = open_store(study, options, Path("."))
    with storage_errors(store.url), releasing(store, private=False), store.heartbeat():
        store.create_or_load()
        store.check_settings(study_settings(study, options, data))
        refuse_mixed_engines(store.records(), data.optimizer_step, redact_url(store.url))
        store.beat_worker()  # live from now (and every beat): others count it in their claims
        trainer = Trainer(store, data, protocol=study.protocol.value, space=study.space,
                          on_event=on_event, batch=options.batch or Trainer.batch,
                          shared=True)  # fmt: skip
        try:
            make_protocol(study, trainer).run()
        finally:
            store.leave()
    return len(trainer.trained)


def study_settings(study: Study, options: RunOptions, data) -> dict:
    """What every process sharing a study must agree on (part of every trial's identity, or of
    what its results mean): recorded by the first, checked by the others."""
    return {
        "protocol": study.protocol.value,
        "seeds": list(study.seeds),
        "max_epochs": study.max_epochs,
        "limit_train": options.limit_train,
        "limit_eval": options.limit_eval,
        "dtype": options.dtype,
        "data_digests": dict(data.digests),
        "planned": planned_trials(study),  # at most (staged studies reuse some)
    }
