"""Classify images with a saved model.

    hpstudy predict --model runs/paper/final_best_model.pth shoe.jpg photos/
    hpstudy predict --model MODEL.pth t10k-images-idx3-ubyte.gz --json > predictions.jsonl

INPUT is an image file (PNG, JPEG, any size and mode), a folder of them (add --recursive for
subfolders) or an IDX image file, whose images are named PATH#INDEX. Photos with a light background
are inverted to look like FashionMNIST (light garment on black) unless --invert says otherwise.
Output: a table, or with --json one object per line: {"input", "class", "top3": [{"class",
"probability"}, ...]}, always standard JSON (never NaN or Infinity). An input that cannot be used
(unreadable, not a regular file, larger than the bounds in `hpstudy.predict.classify`, or one the
model gives no finite output for) is reported on stderr, one line each, and the others are still
classified; the exit code is then 1, after all of them. A model file that cannot be used (damaged,
unsafe, or with NaN/infinite weights) stops the command before any input is read (exit code 2).
The model file is loaded safely (weights only): nothing in it runs.
"""

from __future__ import annotations

import argparse

# Same as hpstudy.predict.classify.INVERT_MODES; repeated so that `--help` does not import torch.
_INVERT_MODES = ("auto", "never", "always")
_PROGRESS_MIN = 1000  # inputs below this finish too fast for a progress bar to help


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="MODEL.pth",
        help="a model file saved by hpstudy, e.g. runs/paper/final_best_model.pth",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders of images, or IDX image files (*idx3-ubyte[.gz])",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line and image")
    parser.add_argument(
        "--invert",
        choices=_INVERT_MODES,
        default="auto",
        help="auto (default): invert images whose border is light; never; always",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=256,
        metavar="N",
        help="images read and classified at a time (default: 256)",
    )
    parser.add_argument(
        "-r", "--recursive", action="store_true", help="also read images in subfolders of folders"
    )


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from tqdm import tqdm

    from hpstudy.predict import classify as predict
    from hpstudy.predict import modelfile
    from hpstudy.usertext import shown

    # The model first: a bad model file stops everything before any input is read.
    loaded = modelfile.load_model(args.model)
    items, failures = predict.collect_inputs(args.inputs, recursive=args.recursive)
    for failure in failures:
        _report(failure)
    rows: list[predict.Prediction] = []
    resized: list[tuple[str, tuple[int, int]]] = []  # image files not of the model's size
    n_failed, n_ok = len(failures), 0
    with tqdm(
        total=len(items),
        unit="img",
        file=sys.stderr,
        leave=False,
        disable=True if len(items) < _PROGRESS_MIN else None,  # None: only on a terminal
    ) as bar:
        outcomes = predict.classify(
            loaded, items, invert=args.invert, batch_size=args.batch_size, on_progress=bar.update
        )
        for outcome in outcomes:
            if isinstance(outcome, predict.Failure):
                n_failed += 1
                _report(outcome)
            else:
                n_ok += 1
                if outcome.resized_from is not None:
                    resized.append((outcome.input, outcome.resized_from))
                if args.json:
                    # allow_nan=False: a NaN that slipped past classify fails loudly, not as JSON
                    # that strict parsers refuse.
                    print(json.dumps(outcome.to_dict(), allow_nan=False))
                else:
                    rows.append(outcome)
    if not args.json:
        _print_table(rows)
    if resized:
        h, w = loaded.input_shape
        first, (fh, fw) = resized[0]
        print(f"hpstudy predict: resized {len(resized)} image(s) to the model's {h} x {w} input "
              f"(the first, {shown(first)}, was {fh} x {fw})", file=sys.stderr)  # fmt: skip
    if n_failed:
        print(
            f"hpstudy predict: {n_failed} input(s) could not be classified (see above); "
            f"{n_ok} classified",
            file=sys.stderr,
        )
        return 1
    return 0


def _report(failure) -> None:
    import sys

    from tqdm import tqdm

    from hpstudy.usertext import shown

    # tqdm.write keeps the message from tearing through a progress bar. File names and what
    # Pillow says about a file are user text: escaped, so they cannot drive the terminal.
    tqdm.write(f"hpstudy predict: cannot classify {shown(failure.input)}: "
               f"{shown(failure.reason)}", file=sys.stderr)  # fmt: skip


def _print_table(rows) -> None:
    from hpstudy.usertext import shown

    if not rows:
        return
    # Image and class names are user text: escaped before they are measured and printed.
    inputs = [shown(r.input) for r in rows]
    classes = [shown(r.class_name) for r in rows]
    top3s = ["  ".join(f"{shown(name)} {p:.3f}" for name, p in r.top3) for r in rows]
    width_input = min(max(len("INPUT"), *map(len, inputs)), 60)
    width_class = max(len(shown(name)) for r in rows for name, _ in r.top3)
    print(f"{'INPUT':<{width_input}}  {'CLASS':<{width_class}}  INV  TOP-3")
    for r, name, cls, top3 in zip(rows, inputs, classes, top3s, strict=True):
        inv = "yes" if r.inverted else "no"
        print(f"{name:<{width_input}}  {cls:<{width_class}}  {inv:<3}  {top3}")
