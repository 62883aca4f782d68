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

from hpstudy.commands.progress import machine_hint, make_progress
from hpstudy.commands.study_args import add_study_options, options_from
from hpstudy.usertext import shown


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
        "and read the test set once, and once more test-selected on that split's training "
        "images, to measure the leak and its two parts (triples the training)",
    )
    add_study_options(parser)


def run(args: argparse.Namespace) -> int:
    from hpstudy.runner.execute import run_study

    study, options = options_from(args)
    progress = make_progress(quiet=args.quiet, hint=machine_hint(options))
    summary = run_study(study, options, on_event=progress)
    # Paths hold --out, or the study's name: user text, escaped.
    print(f"run folder: {shown(summary.run_dir)}  (tables in {shown(summary.run_dir / 'tables')})")
    if summary.model_path:
        print(f"final model: {shown(summary.model_path)}")
    ratio = summary.wall_s / summary.floor_s if summary.floor_s else float("nan")
    print(
        f"trained {summary.n_trained} trials now; the study holds {summary.model_epochs} "
        f"model-epochs, {summary.wall_s:.1f} s training wall time, FLOP floor "
        f"{summary.floor_s:.1f} s on {options.device} (wall/floor {ratio:.1f}); "
        f"this run took {summary.elapsed_s:.1f} s"
    )
    if not args.no_report and summary.model_path:
        from hpstudy.runner.phases import record_phase

        started = time.perf_counter()
        _write_report(summary.run_dir, args, summary.data)
        record_phase(summary.run_dir, "report", time.perf_counter() - started)
    return 0


def _write_report(run_dir, args: argparse.Namespace, data) -> None:
    import shlex

    from hpstudy.report import build_report
    from hpstudy.storage import redact_args

    words = redact_args(sys.argv[1:], args.storage)  # the report is shared; passwords are not
    command = shlex.join(["hpstudy", *words]) if words else None
    paths = build_report(run_dir, data_dir=args.data_dir, command=command, storage=args.storage,
                         data=data)  # fmt: skip
    print(f"report: {shown(paths.html)}")
