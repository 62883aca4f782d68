"""Show where a run stands: counts by outcome, the best configuration, costs.

    hpstudy status runs/paper
    hpstudy status runs/paper --json     # one JSON object (keys below)
    hpstudy status runs/grid --storage postgresql://user:secret@host/db   # run.json has no password

JSON keys: study, protocol, counts (by outcome, plus running/waiting/interrupted), best
(config, accuracy, seeds, n), trials (config, seed, outcome, status, best_accuracy, best_epoch,
epochs), model_epochs, wall_s, floor_s (FLOP floor of those model-epochs on the run's device, from
matmul throughput measured here), phases_s (seconds per phase of the last `hpstudy run`: data,
planning, capture, training, evaluation, storage, report, other; null for older runs).
"""

from __future__ import annotations

import argparse
import json

from hpstudy.commands import add_run_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_dir(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from hpstudy.runner.status import run_status
    from hpstudy.usertext import shown

    result = run_status(args.run_dir, args.storage)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    counts = ", ".join(f"{v} {k}" for k, v in result["counts"].items() if v)
    # The study's name and protocol come from run.json, a file anyone may have edited.
    print(f"study {shown(result['study'])} ({shown(result['protocol'])}): "
          f"{counts or 'no trials'}")  # fmt: skip
    best = result["best"]
    if best:
        from hpstudy.config.config import Config

        config = Config.from_dict(best["config"])
        print(
            f"best: {config.text(seed=False)}: {100 * best['accuracy']:.2f}% "
            f"{best['selection']} accuracy "
            f"(mean of {best['n']} seeds)"
        )
    print(
        f"{result['model_epochs']} model-epochs, {result['wall_s']:.1f} s training wall time, "
        f"FLOP floor {result['floor_s']:.1f} s"
    )
    if result.get("phases_s"):
        parts = ", ".join(f"{name} {s:.1f}" for name, s in result["phases_s"].items())
        print(f"phases of the last run (s): {parts}")
    return 0
