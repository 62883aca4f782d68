"""Class balance, pixel statistics and sample images of a dataset (FashionMNIST by default).

Prints the class names, the examples per class in the training and test sets and the training
pixels' mean and std on [0, 1]; writes eda_class_distribution.png and (for images)
eda_samples.png into --out.

    hpstudy eda                              # FashionMNIST; figures in runs/eda
    hpstudy eda --out /tmp/eda --data-dir DIR
    hpstudy eda --study digits               # the data of a study file's [data] table
    hpstudy eda --data mnist                 # a name (digits: test_size 0.2, split_seed 0)
    hpstudy eda --data my-data.npz           # or a path: an .npz or a folder of IDX files
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
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--study", metavar="STUDY",
                       help="analyse the data of this study file's [data] table")  # fmt: skip
    which.add_argument("--data", metavar="NAME_OR_PATH",
                       help="fashion-mnist, mnist, kmnist, digits, or a path to an .npz or a "
                       "folder of four IDX files")  # fmt: skip
    add_data_dir(parser)


def _spec(args: argparse.Namespace) -> tuple[dict, str]:
    """The [data] spec the options name, and how to title it."""
    from hpstudy.config.study import DATA_NAMES
    from hpstudy.config.studyfile import load_study

    if args.study:
        study = load_study(args.study)
        return study.data or {"name": "fashion-mnist"}, study.data_label
    if args.data in DATA_NAMES:
        spec = {"name": args.data} | (
            {"test_size": 0.2, "split_seed": 0} if args.data == "digits" else {}
        )
        return spec, args.data
    if args.data:
        return {"path": args.data}, args.data
    return {"name": "fashion-mnist"}, "fashion-mnist"


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from hpstudy.config.paths import user_path
    from hpstudy.data import eda
    from hpstudy.data.datasets import load_dataset
    from hpstudy.usertext import shown

    spec, label = _spec(args)
    out = eda.ensure_out_dir(user_path(args.out, "--out"))  # before the data is read
    start = time.perf_counter()
    ds = load_dataset(spec, args.data_dir,
                      progress=lambda line: print(shown(line), file=sys.stderr))  # fmt: skip
    elapsed = time.perf_counter() - start
    title = "FashionMNIST" if label == "fashion-mnist" else label
    result = eda.run_eda(ds, out, title=title)
    s = result.summary

    source = ds.source or "scikit-learn's bundled copy"
    shape = " x ".join(map(str, ds.input_shape))
    print(f"{shown(title)} from {shown(source)} ({elapsed:.2f} s to read, check and decode); "
          f"inputs {shape}, {ds.n_classes} classes")  # fmt: skip
    for warning in ds.warnings:
        print(f"warning: {shown(warning)}", file=sys.stderr)
    print()
    names = [shown(name) for name in s.class_names]  # user text: escaped before it is measured
    width = max(map(len, names))
    print(f"{'label':>5}  {'class':<{width}}  {'train':>7}  {'test':>6}")
    for label, (name, n_train, n_test) in enumerate(
        zip(names, s.train_counts, s.test_counts, strict=True)
    ):
        print(f"{label:>5}  {name:<{width}}  {n_train:>7,}  {n_test:>6,}")
    total_train, total_test = int(s.train_counts.sum()), int(s.test_counts.sum())
    print(f"{'':>5}  {'total':<{width}}  {total_train:>7,}  {total_test:>6,}")
    print()
    what = "pixels on [0, 1]" if ds.x_train.dtype.kind == "u" else "values"
    print(f"training {what}: mean {s.pixel_mean:.4f}, std {s.pixel_std:.4f}")
    for path in result.figures:
        print(f"wrote {shown(path)}")
    return 0
