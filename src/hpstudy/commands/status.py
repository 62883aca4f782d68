"""Show where a run stands: counts by outcome, the best configuration, costs.

    hpstudy status runs/paper
    hpstudy status runs/paper --json     # one JSON object (keys below)
    hpstudy status runs/grid --storage postgresql://user:secret@host/db   # run.json has no password

JSON keys: study, protocol, counts (by outcome, plus running/waiting/interrupted), best
(config, accuracy, seeds, n), trials (config, seed, outcome, status, best_accuracy, best_epoch,
epochs), model_epochs, wall_s, floor_s (FLOP floor of those model-epochs on the run's device, from
matmul throughput measured here).
"""

from __future__ import annotations

import argparse
import json
import math

from hpstudy.commands import add_run_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_dir(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def status(run_dir: str, storage: str | None = None) -> dict:
    """The status object that `--json` prints; `storage` overrides run.json's storage URL."""
    import torch

    from hpstudy.engine.results import Outcome
    from hpstudy.runner import cost_summary, recompute_tables
    from hpstudy.store import TrialStatus, open_run, read_run_info, storage_errors

    info = read_run_info(run_dir)
    store = open_run(run_dir, storage)
    with storage_errors(store.url):
        records = [r for r in store.records() if r.status is not TrialStatus.DISCARDED]
    counts = {o.value: 0 for o in Outcome} | {"running": 0, "waiting": 0, "interrupted": 0}
    for r in records:
        counts[r.outcome.value if r.outcome else r.status.value] += 1
    tables = recompute_tables(run_dir, storage)
    winner = tables[-1].winner if tables else None
    best = None
    if winner is not None:
        best = {"config": winner.config, "accuracy": _num(winner.selection.mean),
                "seeds": list(winner.seeds), "n": winner.selection.n,
                "selection": tables[-1].selection}  # fmt: skip
    device = info.get("device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    trials = [
        {
            "number": r.number,
            "config": r.config.to_dict(),
            "seed": r.seed,
            "outcome": r.outcome.value if r.outcome else None,
            "status": r.status.value,
            "best_accuracy": _num(r.best_accuracy) if r.status.is_finished else None,
            "best_epoch": r.best_epoch,
            "epochs": r.epochs,
        }
        for r in records
    ]
    return {
        "study": info["study"],
        "protocol": info.get("protocol"),
        "counts": counts,
        "best": best,
        "trials": trials,
        **cost_summary(records, device, info.get("matmul_flops")),
    }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def run(args: argparse.Namespace) -> int:
    result = status(args.run_dir, args.storage)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    counts = ", ".join(f"{v} {k}" for k, v in result["counts"].items() if v)
    print(f"study {result['study']} ({result['protocol']}): {counts or 'no trials'}")
    best = result["best"]
    if best:
        from hpstudy.space import Config

        config = Config.from_dict(best["config"])
        print(
            f"best: {config.topology_label} {config.optimizer} lr={config.lr:g} "
            f"{config.activation}: {100 * best['accuracy']:.2f}% {best['selection']} accuracy "
            f"(mean of {best['n']} seeds)"
        )
    print(
        f"{result['model_epochs']} model-epochs, {result['wall_s']:.1f} s training wall time, "
        f"FLOP floor {result['floor_s']:.1f} s"
    )
    return 0
