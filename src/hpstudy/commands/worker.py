"""Train a share of a grid study that several processes share through one storage.

    hpstudy worker grid --storage postgresql://user@host/db     # start N of these, anywhere

Each worker claims WAITING trials atomically, so every configuration and seed is trained exactly
once; a worker that dies is detected by its missing heartbeats and its trials are trained again
by the others. Workers exit when the grid is complete; then `hpstudy run grid --storage URL`
writes the tables and the final model without training anything.
"""

from __future__ import annotations

import argparse

from hpstudy.commands.study_args import add_study_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="a grid study: name in studies/ or path to a .toml file")
    add_study_options(parser)


def run(args: argparse.Namespace) -> int:
    from hpstudy.commands.progress import machine_hint, make_progress
    from hpstudy.commands.study_args import options_from
    from hpstudy.runner.execute import run_worker

    study, options = options_from(args)
    progress = make_progress(quiet=args.quiet, hint=machine_hint(options))
    n = run_worker(study, options, on_event=progress)
    print(f"worker done: trained {n} trials; the grid is complete")
    return 0
