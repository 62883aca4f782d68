"""The options `run` and `worker` share, and the (study, RunOptions) they turn into.

>>> add_study_options(parser)              # --seeds, --storage, --device, --dtype, ...
>>> study, options = options_from(args)    # RunOptions checks its own values
"""

from __future__ import annotations

import argparse

from hpstudy.commands.data import add_data_dir


def add_study_options(parser: argparse.ArgumentParser, *, worker: bool = False) -> None:
    """Options shared by `run` and `worker` (a worker needs --storage; it has no time budget)."""
    parser.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="seeds per configuration (default: the study file's n_seeds)",
    )
    if worker:
        parser.add_argument(
            "--storage",
            metavar="URL",
            required=True,
            help="the storage every worker shares: postgresql://user@host/db, or "
            "journal:///shared/folder/study.log (a file on a shared file system, no server)",
        )
    else:
        parser.add_argument(
            "--storage",
            metavar="URL",
            help="Optuna storage URL, e.g. postgresql://user@host/db or "
            "journal:///shared/folder/study.log (default: SQLite in the run folder)",
        )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)"
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64", "tf32"],
        help="float32 (default), float64, or tf32: float32 with TensorFloat-32 matmuls "
        "(CUDA only, opt-in, recorded with every trial)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replay each training step from a CUDA graph (default: on with a CUDA device; "
        "cuts Python's kernel-launch overhead, results do not change); --no-cuda-graphs "
        "launches each step from Python",
    )
    parser.add_argument(
        "--concurrent-populations",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="advance the populations of an engine call together, each on its own CUDA stream "
        "(default: on with a CUDA device, off on the CPU, where it gains nothing; results do "
        "not change)",
    )
    parser.add_argument(
        "--optimizer-step",
        default="grouped",
        choices=["grouped", "fused"],
        help="the engine's optimizer step: grouped (default; one update per optimizer rule) or "
        "fused (every rule in one op sequence per tensor); float32 bits differ, so a run keeps "
        "the one its trials were trained with",
    )
    parser.add_argument("--max-epochs", type=int, metavar="E", help="cap on epochs (quick tries)")
    if not worker:  # a budget per worker process would not bound the shared search
        parser.add_argument(
            "--time-budget",
            type=float,
            metavar="S",
            help="search studies: wall-clock seconds for the search and its confirmation; a "
            "round starts only if it and the confirmation fit (default: the study file's "
            "time_budget_s)",
        )
    parser.add_argument(
        "--limit-train",
        type=int,
        metavar="N",
        help="train on a stratified subset of N images (quick tries)",
    )
    parser.add_argument(
        "--limit-eval",
        type=int,
        metavar="N",
        help="evaluate on a stratified subset of N images (quick tries)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        metavar="N",
        help="most trials a worker claims at once (default: one population on its device, and "
        "at most its share among the live workers)"
        if worker
        else "most trials per engine call (default: the study file's batch)",
    )
    parser.add_argument(
        "--grace",
        type=int,
        metavar="S",
        default=None,
        help="seconds without a heartbeat after which another process's trial "
        "is taken as dead and trained again (default: 30)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: torch's, one per core); on a machine that other jobs "
        "share, 1 is often several times faster (a parallel region waits for a descheduled "
        "thread)",
    )
    parser.add_argument(
        "--yes",
        action="store_true",
        help="go ahead with a plan of more than 10,000 trials (otherwise refused, with its cost)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar or progress lines (data warnings and the tables still print)",
    )
    add_data_dir(parser)


def options_from(args: argparse.Namespace):
    """(study, RunOptions) from parsed arguments; RunOptions refuses bad values itself."""
    from hpstudy.config.studyfile import load_study
    from hpstudy.runner.options import RunOptions
    from hpstudy.storage import GRACE_S

    study = load_study(args.study).with_overrides(
        n_seeds=args.seeds, max_epochs=args.max_epochs,
        with_clean=getattr(args, "with_clean", None),
        time_budget_s=getattr(args, "time_budget", None),
    )  # fmt: skip
    options = RunOptions(
        out=getattr(args, "out", None),
        storage=args.storage,
        fresh=getattr(args, "fresh", False),
        device=_device_for(args),
        dtype=args.dtype,
        limit_train=args.limit_train,
        limit_eval=args.limit_eval,
        data_dir=args.data_dir,
        batch=args.batch,
        grace_s=GRACE_S if args.grace is None else args.grace,
        cuda_graphs=args.cuda_graphs,
        concurrent_populations=args.concurrent_populations,
        yes=args.yes,
        threads=args.threads,
        optimizer_step=args.optimizer_step,
    )
    return study, options


def busy_machine_hint(options) -> str | None:
    """The busy-machine note for these options, measured now (`run` and `worker` print it with
    the first epoch, through `progress.machine_hint`, so it never precedes an error)."""
    from hpstudy.commands.progress import machine_hint

    return machine_hint(options)()


def _device_for(args: argparse.Namespace) -> str:
    from hpstudy.runner.devices import resolve_device

    return str(resolve_device(args.device))  # RunOptions checks tf32 and graphs against it
