"""A run's status, as data: counts by outcome, the best configuration, costs, every trial.

>>> result = run_status("runs/paper")          # what `hpstudy status --json` prints
>>> result["counts"], result["best"], result["model_epochs"], result["floor_s"]
>>> storage_status("postgresql://u@host/db", "grid")   # workers only, no run folder
"""

from __future__ import annotations

import math


def run_status(run_dir: str, storage: str | None = None) -> dict:
    """The status object that `--json` prints; `storage` overrides run.json's storage URL."""
    from hpstudy.engine.results import Outcome
    from hpstudy.runner.outputs import cost_summary, recompute_tables
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
        best = {"config": winner.config.to_dict(), "accuracy": _num(winner.selection.mean),
                "seeds": list(winner.seeds), "n": winner.selection.n,
                "selection": tables[-1].selection}  # fmt: skip
    device = info.get("device", "cpu")
    if device.startswith("cuda") and not _has_cuda():  # torch only loaded for a GPU run's folder
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


def storage_status(url: str, study_name: str) -> dict:
    """Where a study that workers share stands, from its storage alone (no run folder): trials
    done, running (by worker, 'host:pid'), interrupted, left (of what the first process
    planned), the live workers and an ETA at the rate trials finished so far."""
    from datetime import datetime

    from hpstudy.errors import UserError
    from hpstudy.storage import Store, TrialStatus, redact_url, storage_errors

    store = Store(url, study_name, reader=True)
    with storage_errors(url):
        if not store.exists():
            names = ", ".join(sorted(store.study_names())) or "none"
            raise UserError(f"no study {study_name!r} in {redact_url(url)} (it holds: {names}); "
                            "check the name, or start a worker first")  # fmt: skip
        records = [r for r in store.records() if r.status is not TrialStatus.DISCARDED]
        settings = store.get_meta("settings") or {}
        live = store.live_workers()
    done = [r for r in records if r.status.is_finished]
    finished_keys = {r.key for r in done}
    running = [r for r in records if r.status is TrialStatus.RUNNING]
    by_worker: dict[str, int] = {}
    for r in running:
        by_worker[r.worker or "unknown"] = by_worker.get(r.worker or "unknown", 0) + 1
    interrupted = sum(r.status is TrialStatus.INTERRUPTED and r.key not in finished_keys
                      for r in records)  # fmt: skip
    planned = settings.get("planned")
    left = None if planned is None else max(0, planned - len(finished_keys) - len(running))
    eta_s = None
    starts = [r.datetime_start for r in done if r.datetime_start]
    if done and starts and left is not None:
        elapsed = (datetime.now() - min(starts)).total_seconds()
        rate = len(done) / max(elapsed, 1e-9)  # trials per second, all workers together
        eta_s = (left + len(running)) / rate if left + len(running) else 0.0
    return {
        "study": study_name,
        "storage": redact_url(url),
        "protocol": settings.get("protocol"),
        "done": len(finished_keys),
        "running": len(running),
        "running_by_worker": by_worker,
        "interrupted": interrupted,
        "waiting": sum(r.status is TrialStatus.WAITING for r in records),
        "left": left,
        "planned": planned,
        "live_workers": live,
        "eta_s": eta_s,
    }


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
