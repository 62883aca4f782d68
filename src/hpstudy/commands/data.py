"""Locate, verify or download the FashionMNIST files.

Usage (the files are found as `hpstudy.data.fashion_mnist` describes, downloaded only when no
folder has them):

    hpstudy data verify [--data-dir DIR]   # find the files (downloading if needed) and check them
"""

from __future__ import annotations

import argparse


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """The `--data-dir` option shared by every command that reads the dataset."""
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder with the four FashionMNIST files (default: $HPSTUDY_DATA_DIR, the user "
        "cache, /usr/share/datasets/fashion-mnist, else download)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["verify"], help="verify: locate and check the files")
    add_data_dir(parser)


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from hpstudy.data import sources
    from hpstudy.usertext import shown

    start = time.perf_counter()
    # Download steps (on a cold machine only) go to stderr, so stdout stays the report. They
    # name URLs, folders and what a server answered; the folder may be --data-dir: escaped.
    ds = sources.load(args.data_dir, progress=lambda line: print(shown(line), file=sys.stderr))
    elapsed = time.perf_counter() - start
    print(f"FashionMNIST verified in {shown(ds.source)} ({elapsed:.2f} s to read, check and "
          "decode)")  # fmt: skip
    for name, digest in ds.digests.items():
        print(f"  {name:<26} sha256 {digest}")
    return 0
