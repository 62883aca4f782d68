"""The `hpstudy` command line: a thin layer over the library.

Each command lives in `hpstudy.commands.<name>` as a pair: `add_arguments(parser)` and
`run(args) -> int`. Command modules import heavy libraries (torch, matplotlib) inside `run`, so
`hpstudy --help` stays fast. A `UserError` is printed as one line on stderr with its exit code;
`--debug` shows the traceback instead. Output cut short by its reader (`hpstudy status RUN
--json | head -c 100`) ends quietly with the shell's code for SIGPIPE, 141.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
from typing import NoReturn

from hpstudy import __version__
from hpstudy.errors import UserError
from hpstudy.storage import interrupts
from hpstudy.usertext import shown

# Command name -> (module, one-line help). Order is the order `--help` lists them in.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("hpstudy.commands.data", "locate, verify or download the FashionMNIST files"),
    "bench": ("hpstudy.commands.bench", "time the paper loop, the engine and the FLOP floor"),
    "eda": ("hpstudy.commands.eda", "class balance, pixel statistics and sample images"),
    "predict": ("hpstudy.commands.predict", "classify images with a saved model"),
    "run": ("hpstudy.commands.run", "run or resume a study (default: the paper's)"),
    "worker": ("hpstudy.commands.worker", "train a share of a study in a shared storage"),
    "status": ("hpstudy.commands.status", "counts, best configuration and costs of a run"),
    "report": ("hpstudy.commands.report", "tables, figures and model card of a run (HTML, MD)"),
    "dashboard": ("hpstudy.commands.dashboard", "browse a run in optuna-dashboard (extra)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse's parser with its error line escaped: 'unrecognized arguments: ...' echoes the
    words as given, which may be file names a shell glob expanded (`hpstudy status runs/*`).
    Subcommand parsers are of the same class (argparse makes them with type(parent))."""

    def error(self, message: str) -> NoReturn:
        super().error(shown(message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hpstudy",
        description="Reproducible, statistically honest hyperparameter studies of PyTorch networks "
        "(MLPs and CNNs).",
    )
    parser.add_argument("--version", action="version", version=f"hpstudy {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(
            name,
            help=help_text,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command_parser.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks for errors",
        )
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


# What to do about an OSError the machine raised, by errno.
_OS_ADVICE = {
    errno.ENOSPC: "free some space and rerun the same command: finished trials are kept",
    errno.EDQUOT: "free some space and rerun the same command: finished trials are kept",
    errno.EACCES: "make it writable, or give --out a folder you can write to",
    errno.EPERM: "make it writable, or give --out a folder you can write to",
    errno.EROFS: "the file system is read-only: give --out a folder on a writable one",
    errno.EFBIG: "it outgrew a file size limit (ulimit -f); lift it and rerun the same command: "
    "finished trials are kept",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with interrupts.installed():  # SIGTERM too, so held trials are marked interrupted
            code = int(args._run(args) or 0)
            sys.stdout.flush()  # a reader gone is told here, not at exit
            return code
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
        _drop_stdout()
        return 128 + signal.SIGPIPE
    except UserError as exc:
        if args.debug:
            raise
        return _fail(args, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print(f"hpstudy {args.command}: interrupted; rerun the same command to continue",
              file=sys.stderr)  # fmt: skip
        return 130
    except OSError as exc:  # the machine said no (disk full, read-only, ...): not a bug
        if args.debug:
            raise
        where = exc.filename or "a file"
        todo = _OS_ADVICE.get(exc.errno, "check it and rerun the same command")
        return _fail(args, f"{where}: {exc.strerror or exc}; {todo}", 1)
    except Exception as exc:
        # A storage failure outside a command's own translation (hpstudy.storage.storage_errors).
        if args.debug or not type(exc).__module__.startswith("sqlalchemy"):
            raise
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return _fail(args, f"the trial store failed ({reason}); check the run folder's "
                     "study.db or --storage, or rerun with --debug for details", 1)  # fmt: skip


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush finds no closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind stdout (tests): nothing to flush
        pass


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    # Messages echo paths and names the user (or a file) gave: escaped, one line, inert.
    print(f"hpstudy {args.command}: error: {shown(message)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
