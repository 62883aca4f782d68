"""Browse a run's trials in optuna-dashboard (optional extra: pip install 'hpstudy[dashboard]').

hpstudy dashboard runs/paper [--port 8080] [--storage URL]
"""

from __future__ import annotations

import argparse
import importlib.util

from hpstudy.commands import add_run_dir
from hpstudy.errors import UserError

INSTALL_HINT = (
    "optuna-dashboard is not installed; install it with "
    "`pip install 'hpstudy[dashboard]'` (or `pip install optuna-dashboard`)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_dir(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)


def run(args: argparse.Namespace) -> int:
    from hpstudy.storage.rundir import open_run, read_run_info
    from hpstudy.usertext import shown

    info = read_run_info(args.run_dir)
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise UserError(INSTALL_HINT)
    store = open_run(args.run_dir, args.storage)  # fails here, in one line, if it cannot log in
    print(
        f"optuna-dashboard on http://{shown(args.host)}:{args.port} (study "
        f"{shown(info['study'])}); "
        "Ctrl-C stops it"
    )
    store.serve_dashboard(args.host, args.port)
    return 0
