"""Run (or resume) a study: train what the store lacks, print each stage's table, save the model.

    hpstudy run                          # the paper study (studies/paper.toml) into runs/paper
    hpstudy run clean --seeds 5          # a named study, five seeds
    hpstudy run studies/grid.toml --storage postgresql://user@host/db
    hpstudy run paper --max-epochs 2 --limit-train 2000 --out /tmp/try   # a quick try

Rerunning the same command continues: finished trials are kept and none is trained twice.
"""

from __future__ import annotations

import argparse
import sys
import time

from hpstudy.commands.data import add_data_dir


def add_study_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `run` and `worker`."""
    parser.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="seeds per configuration (default: the study file's n_seeds)",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL, e.g. "
        "postgresql://user@host/db (default: SQLite in the run folder)",
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
        action="store_true",
        help="replay each training step from a CUDA graph (CUDA only, opt-in: cuts Python's "
        "kernel-launch overhead on large populations; results do not change)",
    )
    parser.add_argument("--max-epochs", type=int, metavar="E", help="cap on epochs (quick tries)")
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
        help="most trials per engine call (default: the study file's batch)",
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
        "--yes",
        action="store_true",
        help="go ahead with a plan of more than 10,000 trials (otherwise refused, with its cost)",
    )
    add_data_dir(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "study",
        nargs="?",
        default="paper",
        help="study name in studies/ or path to a .toml file (default: paper)",
    )
    parser.add_argument("--out", metavar="DIR", help="run folder (default: runs/<study>)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete the study's stored trials and outputs, then start over",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="skip writing the report at the end"
    )
    parser.add_argument(
        "--with-clean",
        action="store_true",
        help="replicate studies: also train every cell with selection on a validation split "
        "and read the test set once, to measure the leak cell by cell (doubles the training)",
    )
    add_study_options(parser)


def options_from(args: argparse.Namespace):
    """(study, RunOptions) from parsed arguments, with every number checked."""
    from hpstudy.errors import UserError
    from hpstudy.runner import RunOptions
    from hpstudy.store import GRACE_S
    from hpstudy.study import load_study

    for name in ("limit_train", "limit_eval", "batch", "grace"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    study = load_study(args.study).with_overrides(
        n_seeds=args.seeds, max_epochs=args.max_epochs,
        with_clean=getattr(args, "with_clean", None),
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
        grace_s=args.grace or GRACE_S,
        cuda_graphs=args.cuda_graphs,
        yes=args.yes,
    )
    return study, options


def _device_for(args: argparse.Namespace) -> str:
    from hpstudy.devices import resolve_device
    from hpstudy.errors import UserError

    device = resolve_device(args.device)
    if args.dtype == "tf32" and device.type != "cuda":
        raise UserError(f"--dtype tf32 needs a CUDA device, got --device {device}; "
                        "use --dtype float32 on the CPU")  # fmt: skip
    if args.cuda_graphs and device.type != "cuda":
        raise UserError(f"--cuda-graphs needs a CUDA device, got --device {device}; "
                        "leave it out on the CPU")  # fmt: skip
    return str(device)


def eta_text(event) -> str:
    """'ETA ~140 s (at most 410 s)': the estimate assumes members yet to stop run as long as
    those that stopped; the bound, that every member runs max_epochs."""

    def left(done: float) -> float:
        return event.elapsed_s * (1 / done - 1) if done > 0 else float("nan")

    bound = left(event.progress)
    if event.expected_progress <= event.progress:
        return f"ETA <= {bound:.0f} s"
    return f"ETA ~{left(event.expected_progress):.0f} s (at most {bound:.0f} s)"


class ProgressPrinter:
    """Plain progress lines on stderr: stage, population size, epoch, ETA (at most every 2 s)."""

    def __init__(self, stream=None, every_s: float = 2.0) -> None:
        # None: whatever sys.stderr is when a line is printed (a default of sys.stderr would
        # bind the stream of import time, which test capture may have closed since).
        self.stream, self.every_s, self.last = stream, every_s, 0.0

    def __call__(self, event) -> None:
        from hpstudy.protocols.base import EpochDone, StageFinished, StageStarted, Waiting
        from hpstudy.tables import format_table

        if isinstance(event, StageStarted):
            of = f"/{event.n_stages}" if event.n_stages else ""
            self.say(
                f"stage {event.index}{of} {event.name}: {event.n_configs} trials, "
                f"{event.n_reused} already in the store"
            )
        elif isinstance(event, EpochDone):
            now = time.monotonic()
            last = event.population == event.n_populations - 1 and event.epoch == event.max_epochs
            if now - self.last < self.every_s and not last:
                return
            self.last = now
            self.say(
                f"  {event.stage}: population {event.population + 1}/{event.n_populations} "
                f"({event.n_members} members), epoch {event.epoch}/{event.max_epochs}, "
                f"{event.elapsed_s:.0f} s, {eta_text(event)}"
            )
        elif isinstance(event, Waiting):
            now = time.monotonic()
            if now - self.last >= 10 * self.every_s:
                self.last = now
                self.say(f"  waiting for {event.n_running_elsewhere} trials other processes run")
        elif isinstance(event, StageFinished):
            print(format_table(event.table, limit=15), flush=True)
            print(flush=True)

    def say(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from hpstudy.runner import run_study

    study, options = options_from(args)
    summary = run_study(study, options, on_event=ProgressPrinter())
    print(f"run folder: {summary.run_dir}  (tables in {summary.run_dir / 'tables'})")
    if summary.model_path:
        print(f"final model: {summary.model_path}")
    ratio = summary.wall_s / summary.floor_s if summary.floor_s else float("nan")
    print(
        f"trained {summary.n_trained} trials now; the study holds {summary.model_epochs} "
        f"model-epochs, {summary.wall_s:.1f} s training wall time, FLOP floor "
        f"{summary.floor_s:.1f} s on {options.device} (wall/floor {ratio:.1f}); "
        f"this run took {summary.elapsed_s:.1f} s"
    )
    if not args.no_report and summary.model_path:
        _write_report(summary.run_dir, args)
    return 0


def _write_report(run_dir, args: argparse.Namespace) -> None:
    import shlex

    from hpstudy.report import build_report
    from hpstudy.store import redact_args

    words = redact_args(sys.argv[1:], args.storage)  # the report is shared; passwords are not
    command = shlex.join(["hpstudy", *words]) if words else None
    paths = build_report(run_dir, data_dir=args.data_dir, command=command, storage=args.storage)
    print(f"report: {paths.html}")
