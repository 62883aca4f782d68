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
import fcntl
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from hpstudy import __version__
from hpstudy.atomic import atomic_file
from hpstudy.engine.flops import measure_matmul_flops
from hpstudy.errors import UserError
from hpstudy.protocols import Data, ReplicateProtocol, Trainer, make_protocol
from hpstudy.protocols.staged import TEST_META
from hpstudy.space import Config
from hpstudy.store import (
    GRACE_S,
    RUN_FILE,
    Store,
    TrialRecord,
    check_durable,
    default_url,
    open_run,
    read_run_info,
    redact_args,
    redact_url,
    storage_errors,
)
from hpstudy.study import ProtocolKind, Selection, Study, parse_study
from hpstudy.tables import StageTable, write_tables

MODEL_FILE = "final_best_model.pth"
LOCK_FILE = ".run.lock"
OUTPUTS = ("tables", "weights", MODEL_FILE, "replication.json")  # what --fresh deletes
MAX_TRIALS_UNASKED = 10_000  # a larger plan needs --yes (`--seeds 100000` was a typo once)
REPLICATION_FILE = "replication.json"
_STAGED_KINDS = (ProtocolKind.STAGED, ProtocolKind.REPLICATE)  # cache stage winners' weights


@dataclass(frozen=True)
class RunOptions:
    """Command-line choices that are not part of the study file."""

    out: str | None = None  # run folder (default runs/<study>)
    storage: str | None = None  # storage URL (default: SQLite in the run folder)
    fresh: bool = False  # delete the study's trials and outputs first
    device: str = "cpu"
    dtype: str = "float32"  # float32, float64, or tf32 (float32 with TF32 matmuls, CUDA)
    limit_train: int | None = None  # train on a stratified subset of this many images
    limit_eval: int | None = None  # evaluate on a stratified subset of this many images
    data_dir: str | None = None
    batch: int | None = None  # most trials per engine call (default: the study's)
    grace_s: int = GRACE_S  # heartbeat age after which another process counts as dead
    cuda_graphs: bool = False  # replay training steps from CUDA graphs (CUDA only)
    yes: bool = False  # go ahead with a plan above MAX_TRIALS_UNASKED trials


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


def make_run_dir(run_dir: Path) -> None:
    """Create the run folder, or say in one line why it cannot be one."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"the run folder {run_dir} is a file, not a folder; give --out a "
                        "folder path (it is created if missing)")  # fmt: skip
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run folder {run_dir}: {exc.strerror}; give --out "
                        "a folder you can write to") from exc  # fmt: skip
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"cannot write in the run folder {run_dir}: it is read-only; give "
                        "--out a folder you can write to")  # fmt: skip


def planned_trials(study: Study) -> int:
    """Most trials the study can ask for (reuse between stages only lowers it)."""
    if study.protocol is ProtocolKind.GRID:
        n_configs = math.prod(len(values) for values in study.space.values())
    elif study.protocol is ProtocolKind.SEARCH:
        n_configs = study.n_trials
    else:
        n_configs = sum(len(stage.values) for stage in study.stages)
    if study.protocol is ProtocolKind.REPLICATE:
        return n_configs * (study.n_seeds * (1 + study.with_clean) + study.staged_seeds)
    return n_configs * study.n_seeds


def check_plan(study: Study, options: RunOptions) -> None:
    """Refuse a plan above MAX_TRIALS_UNASKED trials unless `options.yes`; name its cost."""
    from hpstudy.engine.flops import model_epoch_flops

    n_trials = planned_trials(study)
    if n_trials <= MAX_TRIALS_UNASKED or options.yes:
        return
    model_epochs = n_trials * study.max_epochs
    n_train = options.limit_train or 60_000
    widest = max(model_epoch_flops(Config(topology=t), n_train) for t in study.space["topology"])
    raise UserError(f"{study.name} with {study.n_seeds:,} seeds plans up to {n_trials:,} trials "
                    f"({model_epochs:,} model-epochs, up to {model_epochs * widest / 1e15:,.3g} "
                    f"PFLOP); above {MAX_TRIALS_UNASKED:,} trials hpstudy asks first: add --yes "
                    "to go ahead, or lower --seeds")  # fmt: skip


def refuse_other_study(run_dir: Path, study: Study, options: RunOptions, store: Store) -> None:
    """A run folder holds one study: another one there is refused, or with --fresh deleted
    from the folder's own SQLite store (a shared --storage keeps it)."""
    others = set()
    if (run_dir / RUN_FILE).exists():
        with contextlib.suppress(UserError):  # a damaged run.json: this run rewrites it
            others.add(read_run_info(run_dir)["study"])
    if options.storage is None:
        others |= {s.study_name for s in store.storage.get_all_studies()}
    others.discard(study.name)
    if others and not options.fresh:
        raise UserError(f"{run_dir} holds study {sorted(others)[0]!r}; give {study.name!r} its "
                        "own --out folder, or add --fresh to delete that study's trials and "
                        "outputs there")  # fmt: skip
    if options.storage is None:
        for name in others:
            Store(store.url, name).delete()


def clear_outputs(run_dir: Path) -> None:
    """`--fresh`: delete what an earlier run wrote, only in a folder `hpstudy run` made."""
    if not (run_dir / RUN_FILE).exists():
        return  # not a run folder: a `tables/` there is the user's, not ours
    for name in OUTPUTS:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


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


@contextlib.contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock: one `hpstudy run` per folder at a time."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        handle = open(run_dir / LOCK_FILE, "w")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise UserError(f"cannot write in the run folder {run_dir}: {exc.strerror}; give --out "
                        "a folder you can write to") from exc  # fmt: skip
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another `hpstudy run` is using {run_dir}; wait for it to end, "
                "or give this one its own --out folder"
            ) from None
        yield


def prepare_data(study: Study, options: RunOptions) -> Data:
    """Load, verify and split the data as the study says (and the limits allow)."""
    from hpstudy import data as datamod
    from hpstudy import engine

    ds = datamod.load(options.data_dir)
    train_x, train_y = ds.train_images, ds.train_labels
    split: dict = {"selection": study.selection.value, "normalization": study.normalization}
    if study.selection.is_leaky:
        eval_x, eval_y = ds.test_images, ds.test_labels
    else:
        train_idx, val_idx = datamod.stratified_split(train_y, study.validation_size,
                                                      study.validation_seed)  # fmt: skip
        eval_x, eval_y = train_x[val_idx], train_y[val_idx]
        train_x, train_y = train_x[train_idx], train_y[train_idx]
        split |= {
            "validation_size": study.validation_size,
            "validation_seed": study.validation_seed,
        }
    test_x, test_y = ds.test_images, ds.test_labels
    if options.limit_train:
        train_x, train_y = _subset(train_x, train_y, options.limit_train)
    if options.limit_eval:
        eval_x, eval_y = _subset(eval_x, eval_y, options.limit_eval)
        test_x, test_y = _subset(test_x, test_y, options.limit_eval)
    split |= {"n_train": len(train_y), "n_eval": len(eval_y), "n_test": len(test_y)}
    # "tf32" trains in float32 with TensorFloat-32 matmuls (CUDA only); it is part of the split
    # so that its trials never stand in for plain float32 ones.
    dtype = {"float32": torch.float32, "float64": torch.float64, "tf32": torch.float32}[
        options.dtype
    ]
    split["dtype"] = options.dtype
    norm = study.normalization

    def make(x: np.ndarray, y: np.ndarray):
        return engine.make_split(x, y, mean=norm["mean"], std=norm["std"], device=options.device,
                                 dtype=dtype)  # fmt: skip

    train, evaluation = make(train_x, train_y), make(eval_x, eval_y)
    test = evaluation if study.selection.is_leaky else make(test_x, test_y)
    return Data(
        train, evaluation, test, split, dict(ds.digests), options.device, dtype,
        tf32=options.dtype == "tf32", cuda_graphs=options.cuda_graphs,
    )  # fmt: skip


def _subset(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, stratified subset of n examples (all of them when n >= len)."""
    from hpstudy import data as datamod

    if n >= len(y):
        return x, y
    _, idx = datamod.stratified_split(y, n, seed=0)
    return x[idx], y[idx]


def open_store(study: Study, options: RunOptions, run_dir: Path) -> Store:
    url = options.storage or default_url(run_dir)
    return Store(url, study.name, grace_s=options.grace_s)


def write_run_info(run_dir: Path, study: Study, options: RunOptions, data: Data) -> None:
    # Measured before training, when the device is as busy as training will find it; the
    # FLOP floor of `run` and `status` uses this number rather than a later measurement.
    flops = measure_matmul_flops(options.device, data.dtype, tf32=data.tf32)
    info = run_info(study, options, data.split, argv=sys.argv, matmul_flops=flops)
    with atomic_file(run_dir / RUN_FILE, "w") as f:
        json.dump(info, f, indent=1)


def run_info(
    study: Study, options: RunOptions, split: dict, *, argv: list[str], matmul_flops: float
) -> dict:
    """What run.json holds. The storage URL loses its password (`redact_url`) in `storage`,
    `options` and `command`: run folders are shared with reports, passwords are not."""
    storage = redact_url(options.storage) if options.storage else options.storage
    return {
        "schema_version": 1,
        "study": study.name,
        "study_file": str(study.path),
        "study_toml": study.path.read_text(encoding="utf-8"),
        "protocol": study.protocol.value,
        "storage": storage,
        "overrides": {
            "n_seeds": study.n_seeds,
            "max_epochs": study.max_epochs,
            "with_clean": study.with_clean,
        },
        "options": asdict(options) | {"storage": storage},
        "split": split,
        "device": options.device,
        "matmul_flops": matmul_flops,
        "command": redact_args(argv, options.storage),
        "versions": {"hpstudy": __version__, "torch": torch.__version__},
        "machine": machine_info(options.device),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def machine_info(device: str) -> dict:
    """What the report's "reproduce and cost" block names: commit, packages, device, threads."""
    import platform
    import subprocess
    from importlib import metadata

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    packages = {"python": platform.python_version()}
    for name in ("torch", "numpy", "optuna", "scipy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = _cpu_model() or platform.processor() or platform.machine()
    return {"git_commit": commit, "packages": packages, "device_name": name,
            "threads": torch.get_num_threads()}  # fmt: skip


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def record_elapsed(run_dir: Path, elapsed_s: float) -> None:
    """Add this invocation's end-to-end time to run.json (the report's cost block reads it)."""
    info = read_run_info(run_dir)
    info |= {"elapsed_s": elapsed_s, "finished": datetime.now(UTC).isoformat(timespec="seconds")}
    with atomic_file(run_dir / RUN_FILE, "w") as f:
        json.dump(info, f, indent=1)


def run_study(
    study: Study, options: RunOptions, *, on_event: Callable[[object], None] = lambda e: None
) -> RunSummary:
    """Run (or resume) a study; returns its tables, final model and costs."""
    start = time.perf_counter()
    run_dir = run_dir_for(study, options)
    check_plan(study, options)
    if options.storage:
        check_durable(options.storage)
    make_run_dir(run_dir)
    store = open_store(study, options, run_dir)
    private = options.storage is None  # study.db in the folder: nobody else writes it
    with exclusive(run_dir), storage_errors(store.url), releasing(store, private=private):
        refuse_other_study(run_dir, study, options, store)
        if options.fresh:
            store.delete()
            clear_outputs(run_dir)
        data = prepare_data(study, options)
        created = store.create_or_load()
        if options.storage is None:
            store.fail_stale(all_running=True)  # our lock: nobody else writes this SQLite file
        write_run_info(run_dir, study, options, data)
        trainer = Trainer(store, data, protocol=study.protocol.value, space=study.space,
                          on_event=on_event, batch=options.batch or study.batch,
                          weights_dir=run_dir / "weights"
                          if study.protocol in _STAGED_KINDS else None)  # fmt: skip
        protocol = make_protocol(study, trainer)
        if study.protocol is ProtocolKind.REPLICATE and study.with_clean:
            protocol.clean = clean_trainer(study, options, trainer, run_dir)
        if study.protocol is ProtocolKind.GRID:
            tables = protocol.run(created=created)
        else:
            tables = protocol.run()
        write_tables(run_dir, tables)
        if isinstance(protocol, ReplicateProtocol):
            write_replication(run_dir, protocol.replication(store.records(), tests=_tests(store)))
        model_path = save_final_model(study, trainer, tables, run_dir)
        record_elapsed(run_dir, time.perf_counter() - start)
    records = store.records()
    costs = cost_summary(records, options.device, read_run_info(run_dir).get("matmul_flops"))
    return RunSummary(run_dir, tables, model_path, len(trainer.trained), **costs,
                      elapsed_s=time.perf_counter() - start, records=records)  # fmt: skip


def clean_trainer(study: Study, options: RunOptions, trainer: Trainer, run_dir: Path) -> Trainer:
    """`--with-clean`: a second trainer on the same store whose split selects on validation
    (its trials have other keys); run.json keeps that split for the report."""
    clean = dataclasses.replace(study, selection=Selection.VALIDATION)
    data = prepare_data(clean, options)
    info = read_run_info(run_dir) | {"clean_split": data.split}
    with atomic_file(run_dir / RUN_FILE, "w") as f:
        json.dump(info, f, indent=1)
    return Trainer(trainer.store, data, protocol=trainer.protocol, space=trainer.space,
                   on_event=trainer.on_event, batch=trainer.batch,
                   weights_dir=trainer.weights_dir)  # fmt: skip


def _tests(store: Store) -> dict[str, float]:
    return store.get_meta_prefixed(TEST_META)


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
    store = open_store(study, options, Path("."))
    with storage_errors(store.url), releasing(store, private=False):
        data = prepare_data(study, options)
        created = store.create_or_load()
        trainer = Trainer(store, data, protocol=study.protocol.value, space=study.space,
                          on_event=on_event, batch=options.batch or study.batch)  # fmt: skip
        make_protocol(study, trainer).run(created=created)
    return len(trainer.trained)


def save_final_model(
    study: Study, trainer: Trainer, tables: list[StageTable], run_dir: Path
) -> Path | None:
    """final_best_model.pth: the last table's winner, its best seed on the selection split."""
    from hpstudy import engine
    from hpstudy.modelfile import save_model

    winner = tables[-1].winner if tables else None
    if winner is None:
        return None
    finished = trainer.store.finished()
    records = [r for r in finished.values() if r.number in winner.trial_numbers and r.is_usable]
    best = max(records, key=lambda r: (r.best_accuracy, -r.seed))
    state_dict, retrained = trainer.weights_of(best)
    tests = trainer.store.study.user_attrs
    if study.selection.is_leaky:
        test_accuracy = best.best_accuracy
    elif TEST_META + best.key in tests:
        test_accuracy = tests[TEST_META + best.key]
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
    }
    return save_model(run_dir / MODEL_FILE, state_dict=state_dict, config=best.config,
                      normalization=dict(study.normalization), metrics=metrics,
                      data_digests=trainer.data.digests, extra=extra)  # fmt: skip


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
    meta = store.study.user_attrs
    tests = {k.removeprefix(TEST_META): v for k, v in meta.items() if k.startswith(TEST_META)}
    return make_protocol(study).tables(store.records(), tests, split=info["split"])


def load_study_from_info(info: dict, run_dir: str | Path) -> Study:
    """The study a run used, with the overrides it ran with (from the copy in run.json)."""
    if "study_toml" not in info or "overrides" not in info:
        raise UserError(f"{Path(run_dir) / RUN_FILE} lacks the study it ran ('study_toml', "
                        "'overrides'); rerun `hpstudy run` with the same study and --out to "
                        "rewrite it (finished trials in the store are kept)")  # fmt: skip
    study = parse_study(info["study_toml"], info.get("study_file") or Path(run_dir) / RUN_FILE)
    return study.with_overrides(**info["overrides"])
