"""One module per CLI command: `add_arguments(parser)` and `run(args) -> int`."""

from __future__ import annotations

import argparse


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    """RUN_DIR and `--storage`, shared by the commands that read a run folder."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, such as runs/paper")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="storage URL to read the run's trials from, instead of the one in run.json (which "
        "keeps no password; PostgreSQL otherwise takes it from PGPASSWORD or ~/.pgpass)",
    )
