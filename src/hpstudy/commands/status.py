"""Show where a run stands: counts by outcome, the best configuration, costs.

    hpstudy status runs/paper
    hpstudy status runs/paper --json     # one JSON object (keys below)
    hpstudy status runs/grid --storage postgresql://user:secret@host/db   # run.json has no password
    hpstudy status grid --storage journal:///shared/grid.log   # workers only: no run folder

With --storage and a study name (no run folder, only workers so far): trials done, running by
worker (host:pid), interrupted, left, the live workers and an ETA.

JSON keys: study, protocol, counts (by outcome, plus running/waiting/interrupted), best
(config, accuracy, seeds, n), trials (config, seed, outcome, status, best_accuracy, best_epoch,
epochs), model_epochs, wall_s, floor_s (FLOP floor of those model-epochs on the run's device, from
matmul throughput measured here), phases_s (seconds per phase of the last `hpstudy run`: data,
planning, capture, training, evaluation, storage, report, other; null for older runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hpstudy.usertext import shown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR|STUDY",
                        help="a run folder, such as runs/paper; or, with --storage, the name of a "
                        "study that workers share (no run folder needed)")  # fmt: skip
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="storage URL to read the trials from, instead of the one in run.json (which keeps "
        "no password; PostgreSQL otherwise takes it from PGPASSWORD or ~/.pgpass)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from hpstudy.runner.status import run_status

    if args.storage and not (Path(args.run_dir) / "run.json").is_file():
        return _storage_status(args)
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
            f"best: {shown(config.text(seed=False))}: {100 * best['accuracy']:.2f}% "
            f"{shown(best['selection'])} accuracy "
            f"(mean of {best['n']} seeds)"
        )
    print(
        f"{result['model_epochs']} model-epochs, {result['wall_s']:.1f} s training wall time, "
        f"FLOP floor {result['floor_s']:.1f} s"
    )
    if result.get("phases_s"):
        parts = ", ".join(f"{shown(name)} {s:.1f}" for name, s in result["phases_s"].items())
        print(f"phases of the last run (s): {parts}")
    return 0


def _storage_status(args: argparse.Namespace) -> int:
    from hpstudy.runner.status import storage_status

    name = Path(args.run_dir).stem if args.run_dir.endswith(".toml") else args.run_dir
    result = storage_status(args.storage, name)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    left = "" if result["left"] is None else f", {result['left']} left of {result['planned']}"
    # The name is the argument given, the protocol and the worker names come from the shared
    # storage, which any process may write: all escaped, as the URL is.
    print(f"study {shown(result['study'])} ({shown(result['protocol'] or '?')}) in "
          f"{shown(result['storage'])}: {result['done']} done, {result['running']} running, "
          f"{result['interrupted']} interrupted{left}")  # fmt: skip
    for worker, n in sorted(result["running_by_worker"].items()):
        print(f"  running on {shown(worker)}: {n} trials")
    print(f"live workers: {len(result['live_workers'])}")
    if result["eta_s"] is not None:
        print(f"ETA: about {result['eta_s']:.0f} s at the rate trials finished so far")
    return 0
