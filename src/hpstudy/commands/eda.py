"""Class balance, pixel statistics and sample images of FashionMNIST.

Prints the class names, the images per class in the training and test sets and the training
pixels' mean and std on [0, 1]; writes eda_class_distribution.png and eda_samples.png into --out.

    hpstudy eda                              # figures in runs/eda
    hpstudy eda --out /tmp/eda --data-dir DIR
"""

from __future__ import annotations

import argparse

from hpstudy.commands.data import add_data_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="runs/eda",
        help="folder for eda_class_distribution.png and eda_samples.png (default: runs/eda)",
    )
    add_data_dir(parser)


def run(args: argparse.Namespace) -> int:
    import sys
    import time
    from pathlib import Path

    from hpstudy import data, eda

    out = eda.ensure_out_dir(Path(args.out))  # a bad --out fails before the data is read
    start = time.perf_counter()
    ds = data.load(args.data_dir, progress=lambda line: print(line, file=sys.stderr))
    elapsed = time.perf_counter() - start
    result = eda.run_eda(ds, out)
    s = result.summary

    print(f"FashionMNIST from {ds.source} ({elapsed:.2f} s to read, check and decode)")
    print()
    width = max(len(name) for name in s.class_names)
    print(f"{'label':>5}  {'class':<{width}}  {'train':>7}  {'test':>6}")
    for label, (name, n_train, n_test) in enumerate(
        zip(s.class_names, s.train_counts, s.test_counts, strict=True)
    ):
        print(f"{label:>5}  {name:<{width}}  {n_train:>7,}  {n_test:>6,}")
    total_train, total_test = int(s.train_counts.sum()), int(s.test_counts.sum())
    print(f"{'':>5}  {'total':<{width}}  {total_train:>7,}  {total_test:>6,}")
    print()
    print(f"training pixels on [0, 1]: mean {s.pixel_mean:.4f}, std {s.pixel_std:.4f}")
    for path in result.figures:
        print(f"wrote {path}")
    return 0
