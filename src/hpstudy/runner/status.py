"""A run's status, as data: counts by outcome, the best configuration, costs, every trial.

>>> result = run_status("runs/paper")          # what `hpstudy status --json` prints
>>> result["counts"], result["best"], result["model_epochs"], result["floor_s"]
"""

from __future__ import annotations

import math


def run_status(run_dir: str, storage: str | None = None) -> dict:
    """The status object that `--json` prints; `storage` overrides run.json's storage URL."""
    import torch

    from hpstudy.engine.results import Outcome
    from hpstudy.runner.execute import cost_summary, recompute_tables
    from hpstudy.storage import TrialStatus, storage_errors
    from hpstudy.storage.rundir import open_run, read_run_info

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
        "phases_s": info.get("phases_s"),  # the last invocation's phase line (None before)
    }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x
