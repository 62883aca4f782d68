"""Time the paper's training loop, the population engine and the FLOP floor side by side.

    hpstudy bench                      # full epochs, T4 + Adam, 60,000 images
    hpstudy bench --steps 100 --json   # quick: 100 steps per variant, scaled to an epoch
    hpstudy bench --steps 100 --repeats 9   # more rounds on a noisy machine
    hpstudy bench --family cnn --steps 20   # the CNN: engine at 1, 8, 32 members, speedup_8
    hpstudy bench --threads 1               # one torch thread: steadier on a shared machine

Variants are timed in interleaved rounds (A B C, A B C, ...); each time and ratio is the median
over rounds, with its spread (min-max). Seconds are per model-epoch; `speedup_15` is paper loop /
engine with 15 members and `floor_ratio_15` is engine with 15 members / FLOP floor (with
`--family cnn`: `speedup_8` and `floor_ratio_8`, convolution FLOPs in the floor). Where
torchvision imports, the row `paper_loop_torchvision` (torchvision's FashionMNIST + ToTensor +
Normalize) and `speedup_15_torchvision` are added; otherwise the table says why they are
missing. On CUDA
each population size is timed again with CUDA graphs (`engine_N_graphs`; the time to capture
them is printed apart), and `--tf32` lets all matmuls use TensorFloat-32.
"""

from __future__ import annotations

import argparse

from hpstudy.commands.data import add_data_dir
from hpstudy.errors import UserError


def _members(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,15,75, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--family",
        choices=["cnn", "mlp"],  # hpstudy.runner.bench.FAMILIES (not imported here: torch)
        default="mlp",
        help="mlp: T4 + Adam (default); cnn: conv [32, 64] with batch norm, dense 128, Adam",
    )
    parser.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help="time N steps per variant, scaled to an epoch (a CNN run: --steps 20, minutes)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        metavar="N",
        help="interleaved rounds; medians and spreads over them (default: 5)",
    )
    parser.add_argument(
        "--members",
        type=_members,
        default=None,
        metavar="LIST",
        help="population sizes to time (default: 1,15,75; with --family cnn 1,8,32)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: best)")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads for every variant (default: torch's, one per core); 1 is "
        "steadier where other processes share the cores",
    )
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="TensorFloat-32 matmuls for every variant and the floor (CUDA only)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_data_dir(parser)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from hpstudy.data import fashion_mnist, sources
    from hpstudy.engine import make_split
    from hpstudy.runner.bench import run_benchmark
    from hpstudy.runner.devices import resolve_device
    from hpstudy.usertext import shown

    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got --steps {args.steps}")
    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got --repeats {args.repeats}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got --threads {args.threads}")
    device = resolve_device(args.device)
    if args.tf32 and device.type != "cuda":
        raise UserError(f"--tf32 needs a CUDA device, got --device {device}")
    ds = sources.load(args.data_dir)
    train = make_split(
        ds.train_images, ds.train_labels, mean=fashion_mnist.PIXEL_MEAN, std=fashion_mnist.PIXEL_STD
    )
    report = run_benchmark(
        train,
        device=device,
        members=args.members,
        steps=args.steps,
        repeats=args.repeats,
        data_dir=ds.source,
        tf32=args.tf32,
        family=args.family,
        threads=args.threads,
        progress=lambda msg: print(f"bench: {shown(msg)} ...", file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps(report))
        return 0
    _print_table(report)
    return 0


def _print_table(report: dict) -> None:
    from hpstudy.usertext import shown

    print(f"{report['family']}: {report['model']}")
    print(
        f"device {report['device']}, torch {report['torch']}, {report['threads']} threads, "
        f"{report['precision']}, matmul {report['matmul_tflops'] * 1e3:.0f} GFLOP/s, "
        f"torchvision {report['torchvision'] or 'unavailable'}, "
        f"median of {report['repeats']} interleaved rounds (spread min-max)"
    )
    print(
        f"{'variant':<22} {'s/model-epoch':>14} {'spread':>15} {'x paper loop':>13} {'x floor':>9}"
    )
    paper = report["per_model_epoch_s"]["paper_loop"]
    for name, seconds in report["per_model_epoch_s"].items():
        low, high = report["per_model_epoch_spread_s"][name]
        print(
            f"{name:<22} {seconds:>14.3f} {low:>7.3f}-{high:<7.3f} {paper / seconds:>13.2f} "
            f"{seconds / report['floor_s']:>9.2f}"
        )
    print(f"{'floor':<22} {report['floor_s']:>14.3f}")
    for name, seconds in report["graph_capture_s"].items():
        print(f"{name}: capturing its CUDA graph took {seconds:.3f} s (not in the epoch time)")
    if report["torchvision_skipped"]:
        # An exception's text, which may quote paths on this machine: escaped.
        print(f"paper_loop_torchvision skipped: {shown(report['torchvision_skipped'])}")
    ratios = [k for k in report if k.startswith(("speedup_", "floor_ratio_"))]
    for name in (k for k in ratios if not k.endswith("_spread")):
        if name in report:
            low, high = report[f"{name}_spread"]
            print(f"{name} {report[name]:.2f} (spread {low:.2f}-{high:.2f})")
