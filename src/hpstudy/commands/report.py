"""Write a run's report: report.html (self-contained), report.md and figures, in the run folder.

    hpstudy report runs/paper                       # compares with sibling runs (runs/clean, ...)
    hpstudy report runs/paper --compare runs/clean --compare runs/grid
    hpstudy report runs/paper --no-compare          # this run alone
    hpstudy report runs/grid --storage postgresql://user:secret@host/db   # run.json has no password

The report reads only the run's store and final_best_model.pth (and the test images the model is
evaluated on): the paper's Tables I-IV with mean ± 95% CI beside the published numbers, the final
model's confusion matrix and per-class scores, curves, and, when a grid or clean run lies beside
it, where the staged winner ranks in the grid and how large the leakage gap is.
"""

from __future__ import annotations

import argparse

from hpstudy.commands import add_run_dir
from hpstudy.commands.data import add_data_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_dir(parser)
    parser.add_argument(
        "--compare",
        action="append",
        metavar="DIR",
        default=[],
        help="another run folder to compare with (repeatable; default: every run folder "
        "beside RUN_DIR on the same data, with the same budget and a protocol to compare with)",
    )
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="compare with no other run (no leakage gap, no rank in a grid)",
    )
    add_data_dir(parser)


def run(args: argparse.Namespace) -> int:
    import shlex
    import time

    from hpstudy.errors import UserError
    from hpstudy.report import build_report
    from hpstudy.storage import redact_url
    from hpstudy.usertext import shown

    if args.no_compare and args.compare:
        raise UserError("--no-compare and --compare contradict each other; give one of them")
    start = time.perf_counter()
    words = ["hpstudy", "report", args.run_dir]
    words += [w for d in args.compare for w in ("--compare", d)]
    words += ["--no-compare"] if args.no_compare else []
    words += ["--data-dir", args.data_dir] if args.data_dir else []
    words += ["--storage", redact_url(args.storage)] if args.storage else []
    paths = build_report(args.run_dir, compare=args.compare, data_dir=args.data_dir,
                         compare_siblings=not args.no_compare, command=shlex.join(words),
                         storage=args.storage)  # fmt: skip
    # Paths are user text (sibling run folders are found by listing the parent): escaped.
    print(f"report: {shown(paths.html)}")
    figures = paths.markdown.parent / "figures"
    print(f"        {shown(paths.markdown)} (figures in {shown(figures)})")
    if paths.related:
        print(f"compared with: {', '.join(map(shown, paths.related))}")
    print(f"written in {time.perf_counter() - start:.1f} s")
    return 0
